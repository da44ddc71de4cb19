-- castle.authenticate of a token of partition 0, on the shard itself or through the router
\set n random(1, :ntokens)
SELECT * FROM castle.authenticate((SELECT t.token FROM bench_tokens AS t WHERE t.n = :n));
