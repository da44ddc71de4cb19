-- PL/pgSQL + pgcrypto verify on a forged token (bad checksum)
\set n random(1, :ntokens)
SELECT * FROM bench_plpgsql.verify((SELECT t.forged FROM bench.tokens AS t WHERE t.n = :n));
