-- create_session: the three user-id types resolve to their overloads, ttl and
-- data are optional, and bad arguments get clear errors.
SELECT castle.create_session(42, '1 hour') AS t_bigint \gset
SELECT castle.create_session('0b7e4b9a-7c1f-4a1e-9d7e-2f3c4b5a6d7e'::uuid, '1 hour') AS t_uuid \gset
SELECT castle.create_session('user_abc', '1 hour') AS t_text \gset
SELECT castle.create_session('user_abc'::text) AS t_plain \gset
SELECT (castle.authenticate(:'t_bigint')).user_id AS bigint_user,
       (castle.authenticate(:'t_uuid')).user_id AS uuid_user,
       (castle.authenticate(:'t_text')).user_id AS text_user;
-- A NULL ttl and castle.default_ttl = 0: the session never expires.
SELECT expires_at IS NULL AS never_expires FROM castle.authenticate(:'t_plain');
-- ttl sets expires_at from the transaction's now().
SELECT expires_at = created_at + interval '1 hour' AS expires_in_an_hour FROM castle.authenticate(:'t_text');
-- data is kept exactly, and the token is what the seed's format says.
SELECT castle.create_session(7, '1 day', '{"device": "phone", "big": 123456789012345678901234567890}') AS t_data \gset
SELECT data FROM castle.authenticate(:'t_data');
SELECT :'t_data' ~ '^oat_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' AS token_shape,
       length(:'t_data') BETWEEN 4 + 1 + 1 + 86 + 2 AND 4 + 28 + 1 + 100 AS token_length;
-- The table keeps a SHA-256 of the secret, never the token or the secret.
SELECT count(*) AS rows_holding_a_token FROM castle.sessions
 WHERE hash = :'t_data' OR position(split_part(:'t_data', '.', 2) IN hash) > 0;
SELECT bool_and(hash ~ '^[0-9a-f]{64}$') AS every_hash_is_lowercase_hex FROM castle.sessions;
-- Bad arguments
SELECT refusal($$SELECT castle.create_session(NULL::text)$$);
SELECT refusal($$SELECT castle.create_session(NULL::bigint)$$);
SELECT refusal($$SELECT castle.create_session('')$$);
SELECT refusal($$SELECT castle.create_session(1, '0 seconds')$$);
SELECT refusal($$SELECT castle.create_session(1, '-1 hour')$$);
SELECT refusal($$SELECT castle.create_session(1, '1 month -31 days')$$);
-- Sessions a create_session made in a rolled-back transaction do not exist.
BEGIN;
SELECT castle.create_session('rolled-back') AS t_rb \gset
ROLLBACK;
SELECT (castle.verify(:'t_rb')).id IS NULL AS rolled_back_token_refused;
