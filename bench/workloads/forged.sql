-- a forged token (bad checksum), through verify: authenticate would raise, and pgbench stops a client on any error
\set n random(1, :ntokens)
SELECT * FROM castle.verify((SELECT t.forged FROM bench.tokens AS t WHERE t.n = :n));
