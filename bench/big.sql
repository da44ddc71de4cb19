-- A table of :big sessions for the scale comparison, bulk-inserted. :ntokens of
-- them are real and evenly spread over the ids and the heap, so the workloads'
-- random lookups touch the whole table as they would in production, not one
-- hot corner of it. The rest carry fake hashes and are never looked up.
-- Tokens are built here in SQL (same format: bench/check.sql shows castle
-- accepts what bench_plpgsql makes), and spot-checked by run.sh.
CREATE TEMP TABLE secrets AS
SELECT n, n::bigint * (:big / :ntokens) AS id, random || bench_plpgsql.crc32(random) AS secret
  FROM (SELECT n, translate(encode(public.gen_random_bytes(48), 'base64'), '+/', '-_') AS random
          FROM generate_series(1, :ntokens) AS n) AS r;

INSERT INTO castle.sessions (id, hash, user_id)
SELECT g,
       coalesce(encode(public.digest(s.secret, 'sha256'), 'hex'), md5(g::text) || md5((-g)::text)),
       'big' || lpad(g::text, 10, '0')     -- in id order, so the user index is filled in order too
  FROM generate_series(1, :big) AS g
  LEFT JOIN secrets AS s ON s.id = g;
SELECT setval(pg_get_serial_sequence('castle.sessions', 'id'), :big);

INSERT INTO bench.tokens (n, id, token, forged)
SELECT n, id, token, bench.forge(token)
  FROM (SELECT n, id, 'oat_' || bench_plpgsql.b64url_encode(id::text) || '.' || bench_plpgsql.b64url_encode(secret) AS token
          FROM secrets) AS t;
