-- castle_sessions 0.4.0 -> 0.5.0: rotation with a grace window and reuse
-- detection, counters and an overview for the DBA, event logging and
-- revocation notices. Every session becomes the first of its own family
-- (family_id NULL); no row is rewritten, and every token valid before is
-- valid after.
\echo Use "ALTER EXTENSION castle_sessions UPDATE TO '0.5.0'" to load this file. \quit

ALTER TABLE castle.sessions ADD COLUMN family_id bigint, ADD COLUMN rotated_at timestamptz;
CREATE INDEX sessions_family_id_idx ON castle.sessions (family_id) WHERE family_id IS NOT NULL;

-- src/stats.rs
CREATE FUNCTION castle."stats_counters"() RETURNS TABLE (
	"datid" oid,
	"collecting" bool,
	"stats_reset" timestamp with time zone,
	"counts" bigint[]
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'stats_counters_wrapper';

CREATE FUNCTION castle."stats_reset"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'stats_reset_wrapper';

CREATE FUNCTION castle."overview"() RETURNS TABLE (
	"live_sessions" bigint,
	"users" bigint,
	"dead_sessions" bigint,
	"rotated_sessions" bigint,
	"oldest_live" timestamp with time zone
)
STRICT STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'overview_wrapper';

-- src/lifecycle.rs
CREATE FUNCTION castle."revoke_deleted_user"(
	"user_id" text
) RETURNS bigint
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'revoke_deleted_user_wrapper';

-- AFTER DELETE ON users FOR EACH ROW EXECUTE FUNCTION castle.revoke_sessions_trigger('id'):
-- deleting a user revokes their sessions (user_id is text, so a foreign key cannot).
-- SECURITY INVOKER on purpose: to_jsonb(OLD) may run a cast the table's owner
-- defined, which must never run with the extension owner's rights;
-- castle.revoke_deleted_user does the privileged work, as revoke_all would
-- (the deleting role needs EXECUTE on it).
CREATE OR REPLACE FUNCTION castle.revoke_sessions_trigger() RETURNS trigger
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
        -- revoke_all's work, which takes the per-user lock every deleter takes
        PERFORM castle.revoke_deleted_user(doomed_user);
    END IF;
    RETURN NULL;
END $$;

-- What sessions do, for the DBA: counters since castle.stats_reset(), one
-- row per database, kept in shared memory when the library is in
-- shared_preload_libraries (collecting = false and NULL counters otherwise).
-- The order of counts is src/stats.rs's Counter.
CREATE VIEW castle.stats AS
SELECT d.datname, c.collecting, c.stats_reset,
       c.counts[1] AS sessions_created, c.counts[2] AS authentications,
       c.counts[3] AS refused_malformed, c.counts[4] AS refused_unknown_id,
       c.counts[5] AS refused_wrong_secret, c.counts[6] AS refused_expired,
       c.counts[7] AS refused_idle, c.counts[8] AS refused_reuse,
       c.counts[9] AS rotations, c.counts[10] AS revoked_by_token,
       c.counts[11] AS revoked_by_id, c.counts[12] AS revoked_by_user,
       c.counts[13] AS revoked_by_trigger, c.counts[14] AS trimmed,
       c.counts[15] AS pruned, c.counts[16] AS reuses_detected,
       c.counts[17] AS touches_written, c.counts[18] AS touches_skipped
  FROM castle.stats_counters() AS c
  JOIN pg_catalog.pg_database AS d ON d.oid OPERATOR(pg_catalog.=) c.datid;

REVOKE ALL ON FUNCTION castle.stats_counters(), castle.stats_reset(), castle.overview(),
    castle.revoke_deleted_user(text) FROM PUBLIC;
-- The trigger now calls revoke_deleted_user: the sign-in set gains it, so
-- running grant_sign_in_role again (as after every update) grants it.
CREATE OR REPLACE FUNCTION castle.grant_sign_in_role(role regrole) RETURNS void
LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT castle.grant_routines(role, castle.request_routines() || ARRAY[
        'castle.create_session(bigint, interval, jsonb)',
        'castle.create_session(uuid, interval, jsonb)',
        'castle.create_session(text, interval, jsonb)',
        'castle.rotate(text, interval)',
        'castle.revoke_all(bigint, bigint)', 'castle.revoke_all(uuid, bigint)',
        'castle.revoke_all(text, bigint)',
        -- what revoke_sessions_trigger calls, for a sign-in role that deletes users
        'castle.revoke_deleted_user(text)'
    ]::regprocedure[])
$$;
REVOKE ALL ON castle.stats FROM PUBLIC;
GRANT SELECT ON castle.stats TO pg_monitor;
GRANT EXECUTE ON FUNCTION castle.stats_counters(), castle.overview() TO pg_monitor;
