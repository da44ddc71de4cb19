-- Hand-written routines, then privileges. Runs after every Rust function exists.

-- BEGIN shared with the SQL edition (managed/)
-- BEGIN shared with castle_sessions_router: scripts/common.sh (router_files)
-- puts this part, as it is, into the router's script (router/), which offers
-- the same routines over shards (docs/sharding.md).

-- Prune a backlog of any size, committing after each batch so that no
-- transaction holds more than one batch of rows. A procedure that commits may
-- carry neither SET nor SECURITY DEFINER, so every name and operator in it is
-- qualified instead; castle.prune does the privileged work.
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
-- castle.revoke_deleted_user does the privileged work, as revoke_all would
-- (the deleting role needs EXECUTE on it).
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
        -- revoke_all's work, which takes the per-user lock every deleter takes
        PERFORM castle.revoke_deleted_user(doomed_user);
    END IF;
    RETURN NULL;
END $$;

-- The two application roles (docs/security.md). A request role checks
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
        'castle.revoke_all(text, bigint)',
        -- what revoke_sessions_trigger calls, for a sign-in role that deletes users
        'castle.revoke_deleted_user(text)'
    ]::regprocedure[])
$$;

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
-- END shared with castle_sessions_router
-- END shared with the SQL edition

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

-- Privileges. Nobody but the owner reads or writes the table directly: the
-- functions that touch it are SECURITY DEFINER with a pinned search_path.
-- EXECUTE is granted by the DBA (see docs/security.md).
REVOKE ALL ON TABLE castle.sessions, castle.user_locks, castle.rotation_keys, castle.shard FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA castle FROM PUBLIC;
GRANT USAGE ON SCHEMA castle TO PUBLIC;
-- The auth-context accessors only read this backend's own binding; every role
-- a row-level security policy may run as needs them.
GRANT EXECUTE ON FUNCTION castle.user_id(), castle.session_id(), castle.logout() TO PUBLIC;
-- Routing reads only the user id or the token it is given (docs/sharding.md).
GRANT EXECUTE ON FUNCTION castle.user_hash(bigint), castle.user_hash(uuid), castle.user_hash(text),
    castle.token_session_id(text) TO PUBLIC;
-- The counters by cause are for the DBA and monitoring, never for a client.
REVOKE ALL ON castle.stats FROM PUBLIC;
GRANT SELECT ON castle.stats TO pg_monitor;
GRANT EXECUTE ON FUNCTION castle.stats_counters(), castle.overview() TO pg_monitor;
