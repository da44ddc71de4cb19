-- authenticate and verify in FROM run as a Custom Scan (the Function Scan's
-- tuplestore and row-type look-ups are most of what a call costs beyond the
-- lookup itself), with a Function Scan's results: one row per call, a row of
-- NULLs for verify's refusal, rescans under LATERAL, the same errors.
SELECT castle.create_session('scan-user', '1 hour', '{"k": 1}') AS good \gset
EXPLAIN (COSTS OFF) SELECT * FROM castle.authenticate(:'good');
SELECT user_id, data FROM castle.authenticate(:'good');
SELECT count(*) FROM castle.authenticate(:'good');
-- verify's refusal: one row, every column NULL
SELECT v.*, (v.id IS NULL AND v.user_id IS NULL AND v.data IS NULL) AS all_null FROM castle.verify('junk') AS v;
SELECT count(*) FROM castle.verify('junk');
-- authenticate's refusal is the usual error
SELECT refusal($$SELECT * FROM castle.authenticate('junk')$$) AS refused;
-- a token from a subquery, and from a prepared statement's parameter, also once its plan is generic
CREATE TEMP TABLE scan_tokens (n int, token text);
INSERT INTO scan_tokens VALUES (1, :'good'), (2, 'junk'), (3, castle.create_session('scan-other'));
SELECT user_id FROM castle.verify((SELECT t.token FROM scan_tokens AS t WHERE t.n = 1));
PREPARE scan_check(text) AS SELECT user_id FROM castle.verify($1);
EXECUTE scan_check(:'good');
EXECUTE scan_check(:'good');
EXECUTE scan_check(:'good');
EXECUTE scan_check(:'good');
EXECUTE scan_check(:'good');
EXECUTE scan_check('junk');
EXECUTE scan_check(:'good');
DEALLOCATE scan_check;
-- LATERAL: the call runs again for every outer row
EXPLAIN (COSTS OFF) SELECT v.user_id FROM scan_tokens AS t, LATERAL castle.verify(t.token) AS v;
SELECT t.n, v.user_id FROM scan_tokens AS t, LATERAL castle.verify(t.token) AS v ORDER BY t.n;
-- A rescan with nothing changed replays the row, as a Function Scan replays its
-- stored rows (here with no Materialize to do it for them): with a write on
-- every use, three outer rows record one use, not three.
SET enable_material = off;
EXPLAIN (COSTS OFF) SELECT g, v.user_id FROM generate_series(1, 3) AS g LEFT JOIN castle.authenticate(:'good') AS v ON true;
BEGIN;
SET LOCAL castle.touch_interval = 0;
-- (the pending counts may still hold earlier transactions': take the difference)
SELECT n_tup_upd AS updates_before FROM pg_stat_xact_user_tables WHERE relid = 'castle.sessions'::regclass \gset
SELECT g, v.user_id, v.used_at = now() AS used_now FROM generate_series(1, 3) AS g LEFT JOIN castle.authenticate(:'good') AS v ON true;
SELECT n_tup_upd - :updates_before AS uses_recorded FROM pg_stat_xact_user_tables WHERE relid = 'castle.sessions'::regclass;
COMMIT;
RESET enable_material;
-- the cases left to the Function Scan: a condition on the row, ORDINALITY, the whole row
EXPLAIN (COSTS OFF) SELECT * FROM castle.verify(:'good') AS v WHERE v.user_id = 'scan-user';
SELECT v.user_id FROM castle.verify(:'good') AS v WHERE v.user_id = 'scan-user';
EXPLAIN (COSTS OFF) SELECT * FROM castle.verify(:'good') WITH ORDINALITY;
SELECT user_id, ordinality FROM castle.verify(:'good') WITH ORDINALITY;
EXPLAIN (COSTS OFF) SELECT v FROM castle.verify(:'good') AS v;
SELECT (v).user_id FROM castle.verify(:'good') AS v;
-- The scan runs authenticate's code itself ("Call: direct") only while the
-- function is ours as installed, with nothing fmgr would do on a call's behalf.
-- EXECUTE is checked as for a call: a role without it is refused.
CREATE ROLE scan_outsider;
SET ROLE scan_outsider;
SELECT refusal($$SELECT * FROM castle.verify('junk')$$) AS without_execute;
SELECT refusal($$SELECT * FROM castle.authenticate('junk')$$) AS without_execute;
RESET ROLE;
DROP ROLE scan_outsider;
-- A SET clause must be in force while the function runs: the scan calls it,
-- and a plan made before the ALTER is made again (the prefix refuses the token).
PREPARE scan_prefixed(text) AS SELECT user_id FROM castle.verify($1);
EXECUTE scan_prefixed(:'good');
ALTER FUNCTION castle.verify(text) SET castle.token_prefix = 'other_';
EXPLAIN (COSTS OFF) SELECT * FROM castle.verify(:'good');
EXECUTE scan_prefixed(:'good');
ALTER FUNCTION castle.verify(text) RESET castle.token_prefix;
EXPLAIN (COSTS OFF) SELECT * FROM castle.verify(:'good');
EXECUTE scan_prefixed(:'good');
DEALLOCATE scan_prefixed;
-- so must SECURITY DEFINER
ALTER FUNCTION castle.authenticate(text) SECURITY DEFINER;
EXPLAIN (COSTS OFF) SELECT * FROM castle.authenticate(:'good');
SELECT user_id FROM castle.authenticate(:'good');
ALTER FUNCTION castle.authenticate(text) SECURITY INVOKER;
-- and STRICT: a NULL token then gives a row of NULLs, with no call and no error
ALTER FUNCTION castle.authenticate(text) STRICT;
EXPLAIN (COSTS OFF) SELECT * FROM castle.authenticate((SELECT NULL::text));
SELECT id IS NULL AND user_id IS NULL AS all_null FROM castle.authenticate((SELECT NULL::text));
ALTER FUNCTION castle.authenticate(text) CALLED ON NULL INPUT;
SELECT refusal($$SELECT * FROM castle.authenticate((SELECT NULL::text))$$) AS refused;
-- per-function statistics count every call, so with them on the scan calls
BEGIN;
SET LOCAL track_functions = 'all';
EXPLAIN (COSTS OFF) SELECT * FROM castle.verify(:'good');
SELECT user_id FROM castle.verify(:'good');
SELECT calls FROM pg_stat_xact_user_functions WHERE schemaname = 'castle' AND funcname = 'verify';
COMMIT;
-- data large enough to be stored out of line (TOAST) comes back whole, by the
-- direct scan, through the function, and under LATERAL
SELECT jsonb_build_object('blob', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) AS i)) AS big_data \gset
SELECT pg_relation_size(reltoastrelid) AS toast_before FROM pg_class WHERE oid = 'castle.sessions'::regclass \gset
SELECT castle.create_session('scan-big', '1 hour', :'big_data') AS big \gset
SELECT pg_relation_size(reltoastrelid) > :toast_before AS stored_out_of_line
  FROM pg_class WHERE oid = 'castle.sessions'::regclass;
EXPLAIN (COSTS OFF) SELECT data FROM castle.authenticate(:'big');
SELECT data = :'big_data'::jsonb AS whole FROM castle.authenticate(:'big');
SELECT (castle.verify(:'big')).data = :'big_data'::jsonb AS whole;
SELECT v.data = :'big_data'::jsonb AS whole FROM (VALUES (:'big')) AS t(token), LATERAL castle.verify(t.token) AS v;
-- other functions in FROM are not touched
EXPLAIN (COSTS OFF) SELECT * FROM castle.sessions_of('scan-user');
DROP TABLE scan_tokens;
