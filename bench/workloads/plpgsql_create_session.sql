-- PL/pgSQL + pgcrypto create_session for a random user (users p1..pN)
\set u random(1, :users)
SELECT bench_plpgsql.create_session('p' || :u::int);
