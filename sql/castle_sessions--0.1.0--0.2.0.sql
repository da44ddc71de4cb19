-- castle_sessions 0.1.0 -> 0.2.0: the session lifecycle (revoke, rotate,
-- device lists, last use, idle timeout, pruning), the auth context (login,
-- user_id) and the per-user lock every deleter takes. Sessions and tokens
-- are untouched: every 0.1.0 token keeps working.
\echo Use "ALTER EXTENSION castle_sessions UPDATE TO '0.2.0'" to load this file. \quit

-- castle.prune finds expired sessions through this; touch never changes expires_at.
CREATE INDEX sessions_expires_at_idx ON castle.sessions (expires_at) WHERE expires_at IS NOT NULL;

-- A successful check may now write used_at. The read is a direct index scan
-- that runs no SQL; the write runs as the table's owner under a pinned
-- search_path, set for that statement alone: the functions themselves no
-- longer pay for SECURITY DEFINER and SET on every call.
ALTER FUNCTION castle.authenticate(text) VOLATILE PARALLEL UNSAFE SECURITY INVOKER RESET search_path;
ALTER FUNCTION castle.verify(text) VOLATILE PARALLEL UNSAFE SECURITY INVOKER RESET search_path;

CREATE FUNCTION castle."login"(
    "token" TEXT
) RETURNS castle.session
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'login_wrapper';

CREATE FUNCTION castle."logout"() RETURNS void
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'logout_wrapper';

CREATE FUNCTION castle."prune"(
    "batch_size" INT DEFAULT 10000
) RETURNS bigint
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'prune_wrapper';

CREATE FUNCTION castle."revoke"(
    "token" TEXT
) RETURNS bool
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'revoke_wrapper';

CREATE FUNCTION castle."revoke_all"(
    "user_id" bigint,
    "except_session" bigint DEFAULT NULL
) RETURNS bigint
VOLATILE SECURITY DEFINER PARALLEL UNSAFE 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'revoke_all_bigint_wrapper';

CREATE FUNCTION castle."revoke_all"(
    "user_id" TEXT,
    "except_session" bigint DEFAULT NULL
) RETURNS bigint
VOLATILE SECURITY DEFINER PARALLEL UNSAFE 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'revoke_all_text_wrapper';

CREATE FUNCTION castle."revoke_all"(
    "user_id" uuid,
    "except_session" bigint DEFAULT NULL
) RETURNS bigint
VOLATILE SECURITY DEFINER PARALLEL UNSAFE 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'revoke_all_uuid_wrapper';

CREATE FUNCTION castle."revoke_session"(
    "session_id" bigint
) RETURNS bool
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'revoke_session_wrapper';

CREATE FUNCTION castle."rotate"(
    "token" TEXT,
    "ttl" interval DEFAULT NULL
) RETURNS TEXT
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'rotate_wrapper';

CREATE FUNCTION castle."session_id"() RETURNS bigint
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'session_id_wrapper';

CREATE FUNCTION castle."sessions_of"(
    "user_id" bigint
) RETURNS SETOF castle.session
STABLE SECURITY DEFINER PARALLEL RESTRICTED 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'sessions_of_bigint_wrapper';

CREATE FUNCTION castle."sessions_of"(
    "user_id" TEXT
) RETURNS SETOF castle.session
STABLE SECURITY DEFINER PARALLEL RESTRICTED 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'sessions_of_text_wrapper';

CREATE FUNCTION castle."sessions_of"(
    "user_id" uuid
) RETURNS SETOF castle.session
STABLE SECURITY DEFINER PARALLEL RESTRICTED 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'sessions_of_uuid_wrapper';

CREATE FUNCTION castle."user_id"() RETURNS TEXT
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'user_id_wrapper';

CREATE PROCEDURE castle.prune_all(batch_size integer DEFAULT 10000)
LANGUAGE plpgsql AS $$
DECLARE
    deleted bigint;
BEGIN
    LOOP
        deleted := castle.prune(batch_size);
        COMMIT;
        EXIT WHEN deleted OPERATOR(pg_catalog.<) batch_size;
    END LOOP;
END $$;

-- AFTER DELETE ON users FOR EACH ROW EXECUTE FUNCTION castle.revoke_sessions_trigger('id'):
-- deleting a user revokes their sessions (user_id is text, so a foreign key cannot).
-- SECURITY INVOKER on purpose: to_jsonb(OLD) may run a cast the table's owner
-- defined, which must never run with the extension owner's rights;
-- castle.revoke_all does the privileged work (the deleting role needs EXECUTE on it).
CREATE FUNCTION castle.revoke_sessions_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    doomed_user text;
BEGIN
    IF TG_NARGS <> 1 OR TG_OP <> 'DELETE' OR TG_LEVEL <> 'ROW' THEN
        RAISE EXCEPTION 'castle.revoke_sessions_trigger(column) must be an AFTER DELETE ... FOR EACH ROW trigger'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (to_jsonb(OLD) ? TG_ARGV[0]) THEN
        RAISE EXCEPTION 'table %.% has no column "%"', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0]
            USING ERRCODE = 'undefined_column';
    END IF;
    -- the column's own text form: bigint's decimal, uuid's lowercase spelling
    doomed_user := to_jsonb(OLD) ->> TG_ARGV[0];
    IF doomed_user IS NOT NULL THEN
        -- through revoke_all, which takes the per-user lock every deleter takes
        PERFORM castle.revoke_all(doomed_user);
    END IF;
    RETURN NULL;
END $$;

-- Privileges, as a fresh 0.2.0 install has them.
REVOKE ALL ON ALL ROUTINES IN SCHEMA castle FROM PUBLIC;
GRANT EXECUTE ON FUNCTION castle.user_id(), castle.session_id(), castle.logout() TO PUBLIC;
