-- castle.is_valid on a real token: the check alone, a boolean
\set n random(1, :ntokens)
SELECT castle.is_valid((SELECT t.token FROM bench.tokens AS t WHERE t.n = :n));
