-- authenticate and verify in FROM (a custom scan, row_scan.sql, or a Function
-- Scan) do everything a Function Scan can: backward fetches, SCROLL and WITH
-- HOLD cursors.
SELECT castle.create_session('cursor-user') AS token \gset
BEGIN;
DECLARE c SCROLL CURSOR FOR SELECT user_id FROM castle.verify(:'token');
FETCH NEXT FROM c;
FETCH PRIOR FROM c;
FETCH LAST FROM c;
FETCH BACKWARD ALL FROM c;
CLOSE c;
COMMIT;
DECLARE held CURSOR WITH HOLD FOR SELECT user_id FROM castle.authenticate(:'token');
FETCH ALL FROM held;
CLOSE held;
-- a rescan under LATERAL calls again for each outer row
SELECT t.n, v.user_id FROM (VALUES (1), (2)) AS t (n)
  CROSS JOIN LATERAL castle.verify(CASE WHEN t.n = 1 THEN :'token' END) AS v;
-- a revoke earlier in the same transaction is seen by the next check
BEGIN;
SELECT castle.is_valid(:'token') AS before_revoke;
SELECT castle.revoke(:'token') AS revoked;
SELECT castle.is_valid(:'token') AS after_revoke, (castle.verify(:'token')).id IS NULL AS verify_null;
ROLLBACK;
-- a cursor declared without SCROLL fetches backward too, as from a
-- Function Scan's one-row tuplestore
BEGIN;
DECLARE d CURSOR FOR SELECT user_id FROM castle.authenticate(:'token');
FETCH NEXT FROM d;
FETCH NEXT FROM d;
FETCH PRIOR FROM d;
FETCH PRIOR FROM d;
FETCH NEXT FROM d;
COMMIT;
BEGIN;
DECLARE e CURSOR FOR SELECT user_id FROM castle.authenticate(:'token') WITH ORDINALITY;
FETCH NEXT FROM e;
FETCH NEXT FROM e;
FETCH PRIOR FROM e;
FETCH PRIOR FROM e;
FETCH NEXT FROM e;
COMMIT;
