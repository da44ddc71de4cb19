-- castle.authenticate on a real token
\set n random(1, :ntokens)
SELECT * FROM castle.authenticate((SELECT t.token FROM bench.tokens AS t WHERE t.n = :n));
