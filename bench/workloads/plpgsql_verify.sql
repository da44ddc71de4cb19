-- PL/pgSQL + pgcrypto verify on a real token
\set n random(1, :ntokens)
SELECT * FROM bench_plpgsql.verify((SELECT t.token FROM bench.tokens AS t WHERE t.n = :n));
