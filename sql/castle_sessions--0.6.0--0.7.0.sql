-- castle_sessions 0.6.0 -> 0.7.0: a database as one shard of a set
-- (castle.shard, configure_shard, user_hash, token_session_id) and what the
-- router extension castle_sessions_router calls (rotate_or_null,
-- revoke_session_of, grant_router_role): docs/sharding.md. No row is
-- rewritten; a database that is not configured as a shard behaves as before.
\echo Use "ALTER EXTENSION castle_sessions UPDATE TO '0.7.0'" to load this file. \quit

-- sql/bootstrap.sql
CREATE TABLE castle.shard (
    partition     integer NOT NULL,
    partitions    integer NOT NULL,
    configured_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK (partitions OPERATOR(pg_catalog.>=) 1 AND partitions OPERATOR(pg_catalog.<=) 1024
           AND (partitions OPERATOR(pg_catalog.&) (partitions OPERATOR(pg_catalog.-) 1)) OPERATOR(pg_catalog.=) 0
           AND partition OPERATOR(pg_catalog.>=) 0 AND partition OPERATOR(pg_catalog.<) partitions)
);
CREATE UNIQUE INDEX shard_one_row ON castle.shard ((true));
SELECT pg_catalog.pg_extension_config_dump('castle.shard', '');
REVOKE ALL ON TABLE castle.shard FROM PUBLIC;

-- src/shard.rs:103
-- castle_sessions::shard::configure_shard
CREATE FUNCTION castle."configure_shard"(
	"partition" INT, /* Option < i32 > */
	"partitions" INT /* Option < i32 > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'configure_shard_wrapper';

-- src/lifecycle.rs:97
-- castle_sessions::lifecycle::revoke_session_of
CREATE FUNCTION castle."revoke_session_of"(
	"user_id" text, /* RawText */
	"session_id" bigint /* i64 */
) RETURNS bool /* bool */
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'revoke_session_of_wrapper';

-- src/shard.rs:154
-- castle_sessions::shard::shard_changed
CREATE FUNCTION castle."shard_changed"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'shard_changed_wrapper';

-- src/shard.rs:92
-- castle_sessions::shard::token_session_id
CREATE FUNCTION castle."token_session_id"(
	"token" text /* Option < RawText > */
) RETURNS bigint /* Option < i64 > */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'token_session_id_wrapper';

-- src/shard.rs:75
-- castle_sessions::shard::user_hash
CREATE FUNCTION castle."user_hash"(
	"user_id" bigint /* i64 */
) RETURNS INT /* i32 */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'user_hash_bigint_wrapper';

-- src/shard.rs:85
-- castle_sessions::shard::user_hash
CREATE FUNCTION castle."user_hash"(
	"user_id" text /* RawText */
) RETURNS INT /* i32 */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'user_hash_text_wrapper';

-- src/shard.rs:80
-- castle_sessions::shard::user_hash
CREATE FUNCTION castle."user_hash"(
	"user_id" uuid /* pgrx :: Uuid */
) RETURNS INT /* i32 */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'user_hash_uuid_wrapper';

-- sql/finalize.sql
-- Every change to castle.shard, by configure_shard, a DBA or a restore,
-- first waits for the sign-ins and sign-outs in flight and holds new ones
-- back (the lock configure_shard takes), and reaches every backend's cached
-- copy when it commits (src/shard.rs).
CREATE FUNCTION castle.shard_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_WHEN = 'BEFORE' THEN
        LOCK TABLE castle.user_locks IN SHARE ROW EXCLUSIVE MODE;
    ELSE
        PERFORM castle.shard_changed();
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER shard_changing BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON castle.shard
    FOR EACH STATEMENT EXECUTE FUNCTION castle.shard_trigger();
CREATE TRIGGER shard_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON castle.shard
    FOR EACH STATEMENT EXECUTE FUNCTION castle.shard_trigger();

-- rotate, NULL for a refused token instead of 28000: what a router calls
-- (docs/sharding.md), since PL/Proxy drops a connection whose call raised.
CREATE FUNCTION castle.rotate_or_null(token text, ttl interval DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN castle.rotate(token, ttl);
EXCEPTION WHEN invalid_authorization_specification THEN
    RETURN NULL;
END $$;

-- The role a router's user mapping logs in as (docs/sharding.md): the
-- sign-in set, what the router's own request functions call, and the
-- administrator's functions it runs on every shard.
CREATE FUNCTION castle.grant_router_role(role regrole) RETURNS void
LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT castle.grant_routines(role, castle.request_routines() || ARRAY[
        'castle.create_session(bigint, interval, jsonb)',
        'castle.create_session(uuid, interval, jsonb)',
        'castle.create_session(text, interval, jsonb)',
        'castle.rotate(text, interval)', 'castle.rotate_or_null(text, interval)',
        'castle.revoke_all(bigint, bigint)', 'castle.revoke_all(uuid, bigint)',
        'castle.revoke_all(text, bigint)', 'castle.revoke_deleted_user(text)',
        'castle.sessions_of(bigint)', 'castle.sessions_of(uuid)', 'castle.sessions_of(text)',
        'castle.revoke_session(bigint)', 'castle.revoke_session_of(text, bigint)',
        'castle.prune(integer)', 'castle.overview()', 'castle.stats_counters()',
        'castle.user_hash(bigint)', 'castle.user_hash(uuid)', 'castle.user_hash(text)',
        'castle.token_session_id(text)'
    ]::regprocedure[])
$$;

REVOKE ALL ON FUNCTION castle.configure_shard(integer, integer), castle.revoke_session_of(text, bigint),
    castle.shard_changed(), castle.shard_trigger(), castle.rotate_or_null(text, interval),
    castle.grant_router_role(regrole), castle.user_hash(bigint), castle.user_hash(uuid),
    castle.user_hash(text), castle.token_session_id(text) FROM PUBLIC;
-- Routing reads only the user id or the token it is given (docs/sharding.md).
GRANT EXECUTE ON FUNCTION castle.user_hash(bigint), castle.user_hash(uuid), castle.user_hash(text),
    castle.token_session_id(text) TO PUBLIC;
