-- The two application roles (issue 12). A request role checks tokens and
-- acts on its own session only; a sign-in role also creates, rotates and
-- signs a user out everywhere. Neither can set castle.* settings.
CREATE ROLE regress_request;
CREATE ROLE regress_sign_in;
SELECT castle.grant_request_role('regress_request');
SELECT castle.grant_sign_in_role('regress_sign_in');
-- exactly these routines, and running it again changes nothing
SELECT castle.grant_request_role('regress_request');
SELECT r.rolname, p.oid::regprocedure AS routine
  FROM pg_proc AS p CROSS JOIN pg_roles AS r
 WHERE p.pronamespace = 'castle'::regnamespace
   AND r.rolname IN ('regress_request', 'regress_sign_in')
   AND has_function_privilege(r.oid, p.oid, 'EXECUTE')
 ORDER BY r.rolname, p.oid::regprocedure::text;
SET ROLE regress_sign_in;
SELECT castle.create_session(2001) AS alice \gset
SELECT castle.create_session(2001) AS alice_phone \gset
SELECT castle.create_session(2002) AS bob \gset
RESET ROLE;
SELECT (castle.verify(:'bob')).id AS bob_session \gset
SELECT (castle.verify(:'alice_phone')).id AS alice_phone_session \gset
SET ROLE regress_request;
-- minting a session, or reading and revoking anyone's, is refused
SELECT refusal($$SELECT castle.create_session(2002)$$) AS mint;
SELECT refusal($$SELECT castle.sessions_of(2002)$$) AS list_other_user;
SELECT refusal($$SELECT castle.revoke_all(2002)$$) AS revoke_other_user;
SELECT refusal(format('SELECT castle.revoke_session(%s)', :bob_session)) AS revoke_by_id;
SELECT refusal($$SELECT castle.rotate('oat_x.y')$$) AS rotate;
SELECT refusal($$SELECT count(*) FROM castle.sessions$$) AS read_table;
SELECT refusal($$SET castle.token_prefix = 'old_'$$) AS set_prefix;
-- the request-side forms need a login
SELECT refusal($$SELECT castle.sessions_of()$$) AS devices_without_login;
BEGIN;
SELECT user_id FROM castle.login(:'alice');
SELECT count(*) AS alice_devices FROM castle.sessions_of();
SELECT castle.revoke_own_session(:bob_session) AS revoked_bobs_device;
SELECT castle.revoke_other_sessions() AS signed_out_elsewhere;
SELECT castle.is_valid(:'alice_phone') AS phone_still_valid;
SELECT castle.is_valid(:'bob') AS bob_untouched;
COMMIT;
RESET ROLE;
-- a sign-in role signs a user out everywhere, for a password change
SET ROLE regress_sign_in;
SELECT castle.revoke_all(2002) AS bob_signed_out;
SELECT castle.rotate(:'alice') IS NOT NULL AS rotated;
RESET ROLE;
DROP OWNED BY regress_request, regress_sign_in;
DROP ROLE regress_request, regress_sign_in;
