-- authenticate, verify and login in FROM run as a custom scan of their own
-- (src/row_scan.rs), not a Function Scan: the same rows, refusals,
-- privileges, calls and cursors (cursors.sql); whatever the scan's contract
-- does not cover keeps the Function Scan.
SELECT castle.create_session('scan-alice', '1 hour', '{"k": 1}') AS alice \gset
SELECT castle.create_session('scan-bob') AS bob \gset
EXPLAIN (COSTS OFF) SELECT * FROM castle.authenticate(:'alice');
-- computed columns: a Result above the scan
EXPLAIN (COSTS OFF) SELECT user_id, id + 1 AS next_id FROM castle.verify(:'alice');
SELECT user_id, id + 1 > id AS computed FROM castle.verify(:'alice');
EXPLAIN (COSTS OFF) SELECT * FROM castle.login(:'alice');
-- the row is the Function Scan's (WITH ORDINALITY keeps one), column by column
EXPLAIN (COSTS OFF) SELECT * FROM castle.authenticate(:'alice') WITH ORDINALITY;
SELECT c.id = f.id AS id, c.user_id = f.user_id AS user_id, c.created_at = f.created_at AS created_at,
       c.updated_at = f.updated_at AS updated_at, c.expires_at = f.expires_at AS expires_at,
       c.used_at IS NOT DISTINCT FROM f.used_at AS used_at, c.data = f.data AS data, c.data AS data_value
  FROM castle.authenticate(:'alice') AS c, castle.authenticate(:'alice') WITH ORDINALITY AS f;
-- a refusal: authenticate's error, verify's row of NULLs
SELECT refusal(format('SELECT * FROM castle.authenticate(%L)', 'oat_MQ.nope')) AS authenticate;
SELECT count(*) AS verify_rows, count(id) AS verify_ids FROM castle.verify('oat_MQ.nope');
SELECT count(*) AS verify_rows FROM castle.verify(NULL) WHERE id IS NULL;
-- a restriction (WHERE) keeps the Function Scan, which applies it
EXPLAIN (COSTS OFF) SELECT user_id FROM castle.authenticate(:'alice') WHERE user_id = 'scan-bob';
SELECT user_id FROM castle.authenticate(:'alice') WHERE user_id = 'scan-bob';
SELECT user_id FROM castle.authenticate(:'alice') WHERE user_id = 'scan-alice';
-- called once a statement; a rescan (a subquery run again for each outer
-- row) calls again only when its argument changed
SELECT authentications AS before FROM castle.stats WHERE datname = current_database() \gset
EXPLAIN (COSTS OFF) SELECT g, (SELECT a.user_id || g FROM castle.authenticate(:'alice') AS a)
  FROM generate_series(1, 3) AS g;
SELECT g, (SELECT a.user_id || g FROM castle.authenticate(:'alice') AS a) FROM generate_series(1, 3) AS g;
SELECT authentications - :before AS calls FROM castle.stats WHERE datname = current_database();
SELECT t.n, (SELECT a.user_id FROM castle.authenticate(t.token) AS a)
  FROM (VALUES (1, :'alice'), (2, :'bob'), (3, :'alice')) AS t (n, token) ORDER BY t.n;
SELECT authentications - :before AS calls FROM castle.stats WHERE datname = current_database();
-- an argument that is a subquery (an initplan of the scan): run again for
-- each outer row it refers to, and the function with it
CREATE TEMP TABLE scan_tokens (n int, token text);
INSERT INTO scan_tokens VALUES (1, :'alice'), (2, :'bob'), (3, :'alice');
-- (the scan's line of the plan alone: majors show initplans each their own way)
CREATE FUNCTION pg_temp.scans(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
        IF line ~ 'Custom Scan \(castle|Function Scan on (authenticate|verify|login)' THEN
            RETURN NEXT regexp_replace(line, '^[ >-]*', '');
        END IF;
    END LOOP;
END $$;
SELECT pg_temp.scans('SELECT user_id FROM castle.authenticate((SELECT k.token FROM scan_tokens AS k WHERE k.n = 2))');
SELECT user_id FROM castle.authenticate((SELECT k.token FROM scan_tokens AS k WHERE k.n = 2));
SELECT pg_temp.scans('SELECT o.n, (SELECT a.user_id FROM castle.authenticate((SELECT k.token FROM scan_tokens AS k WHERE k.n = o.n)) AS a) FROM generate_series(1, 3) AS o (n)');
SELECT o.n, (SELECT a.user_id FROM castle.authenticate((SELECT k.token FROM scan_tokens AS k WHERE k.n = o.n)) AS a)
  FROM generate_series(1, 3) AS o (n);
SELECT authentications - :before AS calls FROM castle.stats WHERE datname = current_database();
-- an argument computed in the statement, the whole row, LATERAL and ROWS
-- FROM keep the Function Scan
EXPLAIN (COSTS OFF) SELECT * FROM castle.authenticate(castle.rotate(:'bob'));
EXPLAIN (COSTS OFF) SELECT a FROM castle.authenticate(:'alice') AS a;
SELECT (a).user_id FROM castle.authenticate(:'alice') AS a;
EXPLAIN (COSTS OFF) SELECT v.user_id FROM (VALUES (:'alice'), (:'bob')) AS t (token), LATERAL castle.verify(t.token) AS v;
EXPLAIN (COSTS OFF) SELECT * FROM ROWS FROM (castle.verify(:'alice'), castle.verify(:'bob'));
-- and so does a placeholder the planner would compute at the scan: an
-- expression of a subquery on an outer join's nullable side, lateral or not
SELECT pg_temp.scans(format('SELECT t.n, s.q FROM scan_tokens AS t LEFT JOIN (SELECT %L::text AS q, a.user_id FROM castle.authenticate(%L) AS a) AS s ON t.n = 1', 'x', :'alice'));
SELECT t.n, s.q, s.user_id FROM scan_tokens AS t
  LEFT JOIN (SELECT 'x'::text AS q, a.user_id FROM castle.authenticate(:'alice') AS a) AS s ON t.n = 1 ORDER BY t.n;
SELECT pg_temp.scans(format('SELECT t.n, s.q FROM scan_tokens AS t LEFT JOIN LATERAL (SELECT coalesce(t.token, %L) AS q, a.user_id FROM castle.authenticate(%L) AS a) AS s ON true', '', :'alice'));
SELECT t.n, s.q = t.token AS q_is_the_token, s.user_id FROM scan_tokens AS t
  LEFT JOIN LATERAL (SELECT coalesce(t.token, '') AS q, a.user_id FROM castle.authenticate(:'alice') AS a) AS s ON true ORDER BY t.n;
-- EXECUTE is checked as for the Function Scan, EXPLAIN included
CREATE ROLE scan_no_execute;
SET ROLE scan_no_execute;
SELECT refusal(format('SELECT * FROM castle.authenticate(%L)', :'alice')) AS authenticate;
SELECT refusal(format('EXPLAIN SELECT * FROM castle.verify(%L)', :'alice')) AS explain_verify;
RESET ROLE;
DROP ROLE scan_no_execute;
-- a DBA's change to the function gives it back its Function Scan, in a
-- prepared statement's cached plan too; undoing it gives the scan back
PREPARE check_token (text) AS SELECT user_id FROM castle.authenticate($1);
EXECUTE check_token(:'alice');
EXECUTE check_token(:'bob');
EXECUTE check_token(:'alice');
EXECUTE check_token(:'bob');
EXECUTE check_token(:'alice');
EXECUTE check_token(:'bob');
EXPLAIN (COSTS OFF) EXECUTE check_token(:'alice');
ALTER FUNCTION castle.authenticate(text) SET search_path = pg_catalog;
EXPLAIN (COSTS OFF) EXECUTE check_token(:'alice');
EXECUTE check_token(:'alice');
ALTER FUNCTION castle.authenticate(text) RESET ALL;
ALTER FUNCTION castle.authenticate(text) SECURITY DEFINER;
EXPLAIN (COSTS OFF) EXECUTE check_token(:'alice');
ALTER FUNCTION castle.authenticate(text) SECURITY INVOKER;
EXPLAIN (COSTS OFF) EXECUTE check_token(:'alice');
DEALLOCATE check_token;
-- track_functions = all counts C functions' calls, which the Function Scan makes
SET track_functions = 'all';
EXPLAIN (COSTS OFF) SELECT * FROM castle.authenticate(:'alice');
RESET track_functions;
