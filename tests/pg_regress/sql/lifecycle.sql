-- Sign-out, sign-out everywhere, the device list, rotation, idle timeout,
-- pruning and the users-table trigger.
SET castle.max_sessions = 0;
-- no use is recorded in this file: a use the worker writes after a statement
-- here backdated used_at would undo that
SET castle.touch_interval = -1;
SELECT castle.create_session('gina', '1 hour', '{"device": "laptop"}') AS g1 \gset
SELECT castle.create_session('gina', '1 hour', '{"device": "phone"}') AS g2 \gset
SELECT castle.create_session('gina', '1 hour', '{"device": "tablet"}') AS g3 \gset
SELECT castle.create_session('hank') AS h1 \gset
SELECT (castle.verify(:'g1')).id AS g1_id, (castle.verify(:'g2')).id AS g2_id,
       (castle.verify(:'g3')).id AS g3_id \gset

-- revoke: only a fully verified token signs out
SELECT 'oat_' || split_part(substr(:'g1', 5), '.', 1) || '.' || split_part(:'h1', '.', 2) AS g1_wrong_secret \gset
SELECT castle.revoke(:'g1_wrong_secret') AS wrong_secret_revokes,
       (castle.verify(:'g1')).id IS NOT NULL AS g1_still_valid;
SELECT castle.revoke('garbage') AS garbage_revokes, castle.revoke(NULL) AS null_revokes;
SELECT castle.revoke(:'g1') AS revoked, castle.revoke(:'g1') AS revoked_twice,
       (castle.verify(:'g1')).id IS NULL AS g1_refused;

-- the device list: live sessions, most recently used first, never the hash
UPDATE castle.sessions SET used_at = now() - interval '5 minutes' WHERE id = :g2_id;
UPDATE castle.sessions SET used_at = now() - interval '1 minute' WHERE id = :g3_id;
SELECT data->>'device' AS device FROM castle.sessions_of('gina');
SELECT count(*) AS hank_devices FROM castle.sessions_of('hank');
SELECT count(*) AS nobody_devices FROM castle.sessions_of('nobody');
SELECT refusal($$SELECT castle.sessions_of(NULL::text)$$);

-- revoke_session: "sign out that device"
SELECT castle.revoke_session(:g2_id) AS revoked, castle.revoke_session(:g2_id) AS again,
       castle.revoke_session(NULL) IS NULL AS null_is_null,
       (castle.verify(:'g2')).id IS NULL AS g2_refused;

-- revoke_all: everywhere else, then everywhere
SELECT castle.create_session('gina') AS g4 \gset
SELECT castle.create_session('gina') AS g5 \gset
SELECT castle.revoke_all('gina', :g3_id) AS revoked_elsewhere;
SELECT (castle.verify(:'g3')).id IS NOT NULL AS kept_this_one, (castle.verify(:'g4')).id IS NULL AS g4_gone,
       (castle.verify(:'h1')).id IS NOT NULL AS other_users_untouched;
SELECT castle.revoke_all('gina') AS revoked_everywhere;
SELECT count(*) AS gina_left FROM castle.sessions WHERE user_id = 'gina';
-- the overloads meet the same rows as create_session's
SELECT castle.create_session(77) AS n1 \gset
SELECT castle.create_session('7d444840-9dc0-11d1-b245-5ffdce74fad2'::uuid) AS u1 \gset
SELECT castle.revoke_all(77) AS bigint_user, castle.revoke_all('7D444840-9DC0-11D1-B245-5FFDCE74FAD2'::uuid) AS uuid_user;

-- rotate: a new token for the same user and data; within castle.rotate_grace
-- the old one stands for the new session (rotation.sql: the grace and reuse)
SELECT castle.create_session('ivy', '1 hour', '{"device": "kiosk"}') AS old \gset
SELECT castle.rotate(:'old') AS new \gset
SELECT (castle.verify(:'old')).id = (castle.verify(:'new')).id AS old_stands_for_new,
       (castle.verify(:'new')).user_id AS new_user, (castle.verify(:'new')).data AS new_data,
       :'new' <> :'old' AS different;
SELECT castle.rotate(:'new', '10 minutes') AS newer \gset
SELECT expires_at = created_at + interval '10 minutes' AS new_ttl FROM castle.authenticate(:'newer');
SELECT refusal(format('SELECT castle.rotate(%L)', :'old')) AS rotate_old_within_grace;
SELECT refusal($$SELECT castle.rotate('oat_bad.token')$$) AS rotate_bad;
-- a refused rotate changed nothing
SELECT (castle.verify(:'newer')).id IS NOT NULL AS newer_still_valid;

-- idle timeout: unused for longer than castle.idle_timeout is refused like expired
SELECT castle.create_session('jack') AS idle \gset
SELECT (castle.verify(:'idle')).id AS idle_id \gset
UPDATE castle.sessions SET used_at = now() - interval '2 hours' WHERE id = :idle_id;
SET castle.idle_timeout = '1h';
SELECT refusal(format('SELECT castle.authenticate(%L)', :'idle')) AS idle_refused,
       (castle.verify(:'idle')).id IS NULL AS verify_is_null,
       (SELECT count(*) FROM castle.sessions_of('jack')) AS jack_devices;
SET castle.idle_timeout = 0;
SELECT (castle.verify(:'idle')).user_id AS without_idle_timeout;

-- prune: deletes dead sessions in batches and says how many
-- earlier files' dead sessions go first, by a DELETE that waits for a row the
-- standing worker holds while it records a use (prune skips such a row, and
-- would count it in a batch below)
WITH cleared AS (DELETE FROM castle.sessions WHERE expires_at <= now() RETURNING 1)
SELECT count(*) >= 0 AS cleared_what_earlier_tests_left FROM cleared;
SELECT count(castle.create_session('kim', '1 hour')) FROM generate_series(1, 5);
UPDATE castle.sessions SET expires_at = now() - interval '1 second' WHERE user_id = 'kim';
SELECT castle.prune(2) AS first_batch, castle.prune(2) AS second_batch, castle.prune() AS rest,
       castle.prune() AS nothing_left;
SELECT refusal($$SELECT castle.prune(0)$$);
UPDATE castle.sessions SET used_at = now() - interval '2 hours' WHERE id = :idle_id;
SET castle.idle_timeout = '1h';
SELECT castle.prune() AS idle_pruned, (castle.verify(:'idle')).id IS NULL AS idle_gone;
RESET castle.idle_timeout;
SELECT count(castle.create_session('lee', '1 hour')) FROM generate_series(1, 5);
UPDATE castle.sessions SET expires_at = now() - interval '1 second' WHERE user_id = 'lee';
CALL castle.prune_all(2);
SELECT count(*) AS lee_left FROM castle.sessions WHERE user_id = 'lee';

-- deleting a user revokes their sessions
CREATE TABLE app_users (id bigint PRIMARY KEY, name text);
CREATE TRIGGER app_users_revoke AFTER DELETE ON app_users
    FOR EACH ROW EXECUTE FUNCTION castle.revoke_sessions_trigger('id');
INSERT INTO app_users VALUES (501, 'mia'), (502, 'noah');
SELECT castle.create_session(501) AS mia \gset
SELECT castle.create_session(502) AS noah \gset
DELETE FROM app_users WHERE id = 501;
SELECT (castle.verify(:'mia')).id IS NULL AS mia_signed_out, (castle.verify(:'noah')).id IS NOT NULL AS noah_kept;
CREATE TABLE app_users_uuid (uid uuid PRIMARY KEY);
CREATE TRIGGER app_users_uuid_revoke AFTER DELETE ON app_users_uuid
    FOR EACH ROW EXECUTE FUNCTION castle.revoke_sessions_trigger('uid');
INSERT INTO app_users_uuid VALUES ('00000000-0000-4000-8000-00000000abcd');
SELECT castle.create_session('00000000-0000-4000-8000-00000000ABCD'::uuid) AS olga \gset
DELETE FROM app_users_uuid;
SELECT (castle.verify(:'olga')).id IS NULL AS olga_signed_out;
CREATE TRIGGER app_users_bad AFTER DELETE ON app_users
    FOR EACH ROW EXECUTE FUNCTION castle.revoke_sessions_trigger('no_such_column');
SELECT refusal($$DELETE FROM app_users WHERE id = 502$$);
DROP TABLE app_users, app_users_uuid;
RESET castle.max_sessions;
