-- castle_sessions 0.5.0 -> 0.6.0: one successor per rotation (short-lived
-- keys that derive it, so a token rotated again hands back the same
-- successor), and
-- the incident switch castle.revoke_everything. No row is rewritten, and
-- every token valid before is valid after.
\echo Use "ALTER EXTENSION castle_sessions UPDATE TO '0.6.0'" to load this file. \quit

-- castle.user_locks holds no rows any more: the user's lock is a heavyweight
-- lock (src/user_lock.rs), and the table's lock stands for every user's
DELETE FROM castle.user_locks;

-- sql/bootstrap.sql
CREATE TABLE castle.rotation_keys (
    epoch bigint PRIMARY KEY,
    key   bytea NOT NULL CHECK (pg_catalog.octet_length(key) = 32)
);
REVOKE ALL ON TABLE castle.rotation_keys FROM PUBLIC;

-- src/lifecycle.rs
CREATE FUNCTION castle."revoke_everything"(
	"issued_before" timestamp with time zone DEFAULT NULL
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'revoke_everything_wrapper';
REVOKE ALL ON FUNCTION castle.revoke_everything(timestamp with time zone) FROM PUBLIC;
