-- The token table every read workload draws from: row n holds a real token,
-- the session id it names (for the primary-key floor) and a forged twin.
-- Run after plpgsql.sql, whose base64url helpers it uses.
CREATE SCHEMA bench;
CREATE TABLE bench.tokens (
    n      int PRIMARY KEY,
    id     bigint NOT NULL,
    token  text NOT NULL,
    forged text NOT NULL
);

-- The token with the last digit of its checksum changed: well formed, so a
-- check gets as far as the checksum and is refused there.
CREATE FUNCTION bench.forge(token text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    secret CONSTANT text := bench_plpgsql.b64url_decode(split_part(token, '.', 2));
BEGIN
    RETURN split_part(token, '.', 1) || '.'
           || bench_plpgsql.b64url_encode(left(secret, -1) || (right(secret, 1)::int + 1) % 10);
END $$;

-- Issue `total` sessions with castle.create_session, one user each (so no
-- trimming), committing every thousand: each call holds an advisory lock
-- until commit, and the shared lock table is not sized for 100k of them.
CREATE PROCEDURE bench.load_tokens(total int)
LANGUAGE plpgsql AS $$
BEGIN
    FOR batch IN 1 .. total BY 1000 LOOP
        INSERT INTO bench.tokens (n, id, token, forged)
        SELECT made.n, (castle.verify(made.token)).id, made.token, bench.forge(made.token)
          FROM (SELECT n, castle.create_session(1000000 + n) AS token
                  FROM generate_series(batch, least(batch + 999, total)) AS n) AS made;
        COMMIT;
    END LOOP;
END $$;

-- Sign `total` users (limit-1 .. limit-N) in three times each, so that each
-- is at castle.max_sessions (3) and every later sign-in trims the oldest.
CREATE PROCEDURE bench.load_users_at_limit(total int)
LANGUAGE plpgsql AS $$
BEGIN
    FOR batch IN 1 .. total BY 1000 LOOP
        PERFORM castle.create_session('limit-' || n)
           FROM generate_series(batch, least(batch + 999, total)) AS n, generate_series(1, 3);
        COMMIT;
    END LOOP;
END $$;
