-- castle_sessions 0.3.0 -> 0.4.0: checked internals and two application roles.
-- A sign-in serializes on the user's row in castle.user_locks instead of an
-- advisory lock; the request-side functions (is_valid, sessions_of(),
-- revoke_own_session, revoke_other_sessions) and the grant functions are new.
-- Sessions and tokens are untouched: every token valid before is valid after.
\echo Use "ALTER EXTENSION castle_sessions UPDATE TO '0.4.0'" to load this file. \quit

CREATE TABLE castle.user_locks (
    user_id   text COLLATE "C" PRIMARY KEY,
    locked_at timestamptz NOT NULL
);
-- owned, as on a fresh install, by castle.sessions' owner, who runs every
-- statement on it (whoever runs this update)
DO $$
BEGIN
    EXECUTE pg_catalog.format('ALTER TABLE castle.user_locks OWNER TO %s',
        (SELECT c.relowner::pg_catalog.regrole FROM pg_catalog.pg_class AS c
          WHERE c.oid = 'castle.sessions'::pg_catalog.regclass));
END $$;

-- src/auth.rs:48
-- castle_sessions::auth::is_valid
CREATE FUNCTION castle."is_valid"(
	"token" text /* Option < RawText > */
) RETURNS bool /* bool */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'is_valid_wrapper';

-- src/lifecycle.rs:90
-- castle_sessions::lifecycle::revoke_other_sessions
CREATE FUNCTION castle."revoke_other_sessions"() RETURNS bigint /* i64 */
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'revoke_other_sessions_wrapper';

-- src/lifecycle.rs:76
-- castle_sessions::lifecycle::revoke_own_session
CREATE FUNCTION castle."revoke_own_session"(
	"session_id" bigint /* i64 */
) RETURNS bool /* bool */
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'revoke_own_session_wrapper';

-- src/lifecycle.rs:98
-- castle_sessions::lifecycle::sessions_of
CREATE FUNCTION castle."sessions_of"() RETURNS SETOF castle.session /* :: pgrx :: heap_tuple :: PgHeapTuple < '_, :: pgrx :: pgbox :: AllocatedByRust
> */
STRICT STABLE SECURITY DEFINER PARALLEL RESTRICTED 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'sessions_of_logged_in_wrapper';

-- The two application roles (README, "Security model"). A request role checks
-- tokens and acts on its own session only; a sign-in role may also create
-- sessions, rotate them and sign a user out everywhere. Each call grants
-- exactly its set of routines and revokes every other castle routine from
-- the role, so running it again after ALTER EXTENSION ... UPDATE gives the
-- role exactly what this version means by it. Only the routines' owner (or
-- a superuser) can run it: it grants as its caller.
CREATE FUNCTION castle.grant_routines(role regrole, routines regprocedure[]) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    routine regprocedure;
BEGIN
    IF role IS NULL OR routines IS NULL THEN
        RAISE EXCEPTION 'a role and its routines are required'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    EXECUTE format('REVOKE ALL ON ALL ROUTINES IN SCHEMA castle FROM %s', role);
    EXECUTE format('GRANT USAGE ON SCHEMA castle TO %s', role);
    FOREACH routine IN ARRAY routines LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', routine, role);
    END LOOP;
END $$;

CREATE FUNCTION castle.request_routines() RETURNS regprocedure[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY[
        'castle.login(text)', 'castle.authenticate(text)', 'castle.verify(text)',
        'castle.is_valid(text)', 'castle.logout()', 'castle.user_id()', 'castle.session_id()',
        'castle.sessions_of()', 'castle.revoke_own_session(bigint)',
        'castle.revoke_other_sessions()', 'castle.revoke(text)'
    ]::regprocedure[]
$$;

CREATE FUNCTION castle.grant_request_role(role regrole) RETURNS void
LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT castle.grant_routines(role, castle.request_routines())
$$;

CREATE FUNCTION castle.grant_sign_in_role(role regrole) RETURNS void
LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT castle.grant_routines(role, castle.request_routines() || ARRAY[
        'castle.create_session(bigint, interval, jsonb)',
        'castle.create_session(uuid, interval, jsonb)',
        'castle.create_session(text, interval, jsonb)',
        'castle.rotate(text, interval)',
        'castle.revoke_all(bigint, bigint)', 'castle.revoke_all(uuid, bigint)',
        'castle.revoke_all(text, bigint)'
    ]::regprocedure[])
$$;

REVOKE ALL ON TABLE castle.user_locks FROM PUBLIC;
REVOKE ALL ON FUNCTION castle.is_valid(text), castle.sessions_of(), castle.revoke_own_session(bigint),
    castle.revoke_other_sessions(), castle.request_routines(), castle.grant_request_role(regrole),
    castle.grant_sign_in_role(regrole), castle.grant_routines(regrole, regprocedure[]) FROM PUBLIC;
