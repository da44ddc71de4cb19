-- castle.login binds a session to the transaction; castle.user_id() and
-- castle.session_id() read it; row-level security follows it. Nothing but a
-- login can create the binding, and it ends with the transaction.
CREATE ROLE regress_castle_app NOLOGIN NOBYPASSRLS;
GRANT USAGE ON SCHEMA castle TO regress_castle_app;
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA castle TO regress_castle_app;
CREATE TABLE notes (id serial PRIMARY KEY, owner_id bigint NOT NULL, body text);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY notes_owner ON notes TO regress_castle_app
    USING (owner_id = castle.user_id()::bigint)
    WITH CHECK (owner_id = castle.user_id()::bigint);
GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO regress_castle_app;
GRANT USAGE ON SEQUENCE notes_id_seq TO regress_castle_app;
INSERT INTO notes (owner_id, body) VALUES (1, 'a1'), (1, 'a2'), (2, 'b1');
SELECT castle.create_session(1) AS alice \gset
SELECT castle.create_session(2) AS bob \gset
SET ROLE regress_castle_app;

-- no login: no user, no rows
SELECT castle.user_id() IS NULL AS no_user, castle.session_id() IS NULL AS no_session;
SELECT count(*) AS visible FROM notes;

-- logged in as alice: only alice's rows, to read and to change
BEGIN;
SELECT user_id FROM castle.login(:'alice');
SELECT castle.user_id(), castle.session_id() = (castle.verify(:'alice')).id AS right_session;
SELECT body FROM notes ORDER BY body;
UPDATE notes SET body = body || '!' RETURNING body;
DELETE FROM notes WHERE owner_id = 2;
SELECT refusal($$INSERT INTO notes (owner_id, body) VALUES (2, 'forged for bob')$$);
SELECT castle.user_id() AS still_alice_after_a_failed_statement;
COMMIT;
RESET ROLE;
SELECT owner_id, body FROM notes ORDER BY id;
SET ROLE regress_castle_app;
-- the binding ended with the transaction
SELECT castle.user_id() IS NULL AS no_user_after_commit;
SELECT count(*) AS visible_after_commit FROM notes;

-- consecutive transactions on one connection: alice, then bob
BEGIN;
SELECT user_id FROM castle.login(:'alice');
SELECT string_agg(body, ',' ORDER BY body) AS alice_sees FROM notes;
COMMIT;
BEGIN;
SELECT user_id FROM castle.login(:'bob');
SELECT string_agg(body, ',' ORDER BY body) AS bob_sees FROM notes;
COMMIT;

-- an aborted transaction ends the binding too
BEGIN;
SELECT user_id FROM castle.login(:'alice');
SELECT 1 / 0;
ROLLBACK;
SELECT castle.user_id() IS NULL AS no_user_after_abort;

-- savepoints: rolling back to before the login undoes it; released ones keep it
BEGIN;
SAVEPOINT before_login;
SELECT user_id FROM castle.login(:'alice');
ROLLBACK TO SAVEPOINT before_login;
SELECT castle.user_id() IS NULL AS undone_by_rollback_to_savepoint;
SELECT user_id FROM castle.login(:'bob');
SAVEPOINT after_login;
SELECT user_id FROM castle.login(:'alice');
SELECT castle.user_id() AS switched;
ROLLBACK TO SAVEPOINT after_login;
SELECT castle.user_id() AS restored;
SAVEPOINT inner_login;
SELECT user_id FROM castle.login(:'alice');
RELEASE SAVEPOINT inner_login;
SELECT castle.user_id() AS kept_after_release;
SELECT castle.logout();
SELECT castle.user_id() IS NULL AS logged_out, count(*) AS visible FROM notes;
COMMIT;

-- a refused login binds nothing and says nothing more than authenticate would
BEGIN;
SELECT refusal($$SELECT castle.login('oat_MQ.bm9wZQ')$$);
SELECT castle.user_id() IS NULL AS still_no_user;
COMMIT;

-- forging: no setting can create or change the binding
SELECT refusal($$SET castle.user_id = '1'$$);
SELECT refusal($$SELECT set_config('castle.session_id', '1', false)$$);
SET request.jwt.claim.sub = '1';
SET "request.user_id" = '1';
SET "app.user_id" = '1';
SELECT castle.user_id() IS NULL AS forged_nothing, castle.session_id() IS NULL AS no_session,
       count(*) AS visible FROM notes;
RESET request.jwt.claim.sub;
RESET "request.user_id";
RESET "app.user_id";

-- SET ROLE and SECURITY DEFINER functions still see the logged-in session
RESET ROLE;
CREATE FUNCTION public.whoami_definer() RETURNS text LANGUAGE sql SECURITY DEFINER
    AS $$ SELECT castle.user_id() $$;
GRANT EXECUTE ON FUNCTION public.whoami_definer() TO regress_castle_app;
SET ROLE regress_castle_app;
BEGIN;
SELECT user_id FROM castle.login(:'bob');
SELECT public.whoami_definer() AS inside_security_definer;
RESET ROLE;
SELECT castle.user_id() AS after_reset_role;
SET LOCAL ROLE regress_castle_app;
SELECT castle.user_id() AS after_set_role;
COMMIT;

-- outside a transaction block the binding cannot outlive the statement
SELECT user_id FROM castle.login(:'alice');
SELECT castle.user_id() IS NULL AS nothing_left;
RESET ROLE;
DROP FUNCTION public.whoami_definer();
DROP TABLE notes;
REVOKE ALL ON ALL ROUTINES IN SCHEMA castle FROM regress_castle_app;
REVOKE USAGE ON SCHEMA castle FROM regress_castle_app;
DROP ROLE regress_castle_app;
