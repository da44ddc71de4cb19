-- castle.verify on a real token
\set n random(1, :ntokens)
SELECT * FROM castle.verify((SELECT t.token FROM bench.tokens AS t WHERE t.n = :n));
