-- castle_sessions_router: the castle API of castle_sessions, in a database
-- of its own, over a set of shards that each run castle_sessions
-- (docs/sharding.md). SQL and PL/Proxy only: no library of ours.
--
-- The shards are PL/Proxy's SQL/MED server castle_shards (p0 ... pN-1), which
-- the DBA creates with a user mapping for this extension's owner: every
-- function here runs as the owner (SECURITY DEFINER), so each backend keeps
-- one connection per shard whoever calls. Routing:
--   by user            create_session, revoke_all, sessions_of(user), revoke_deleted_user
--   by the token's id  authenticate, verify, is_valid, login, rotate, revoke
--   by session id      revoke_session, revoke_own_session
--   on every shard     prune, overview, revoke_everything, stats, stats_reset
-- A refusal never leaves the shard as an error (PL/Proxy drops a connection
-- whose call raised): the router asks the shard's non-raising form and
-- raises 28000 with castle.invalid_message here.
\echo Use "CREATE EXTENSION castle_sessions_router CASCADE" to load this file. \quit

CREATE SCHEMA castle_router;
REVOKE ALL ON SCHEMA castle_router FROM PUBLIC;

-- @SHARED sql/bootstrap.sql@ (castle.session, field for field, put here by scripts/common.sh)

-- Sessions issued before the database was split into shards: their ids carry
-- no bucket, so the router looks theirs up here (docs/sharding.md, "From one
-- database to shards"). Empty on a set that began sharded.
CREATE TABLE castle_router.legacy_sessions (
    id     bigint PRIMARY KEY,
    bucket integer NOT NULL CHECK (bucket BETWEEN 0 AND 1023)
);
SELECT pg_catalog.pg_extension_config_dump('castle_router.legacy_sessions', '');

---------------------------------------------------------------------------
-- Routing keys: the same numbers castle_sessions computes.
---------------------------------------------------------------------------

-- user_hash: the first four bytes of SHA-256 of the user id's stored text
-- (bigint's decimal, uuid's lowercase spelling, text as given), big-endian.
CREATE FUNCTION castle.user_hash(user_id text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ('x' || left(encode(sha256(convert_to(user_id, getdatabaseencoding())), 'hex'), 8))::bit(32)::integer
$$;
CREATE FUNCTION castle.user_hash(user_id bigint) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT castle.user_hash(user_id::text)
$$;
CREATE FUNCTION castle.user_hash(user_id uuid) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT castle.user_hash(user_id::text)
$$;

-- token_session_id: the id a token names (prefix, canonical base64url of
-- the decimal id, ".", a secret of base64url characters), NULL unless the
-- token has that shape under castle.token_prefix. castle_sessions' own
-- version also checks the secret's checksum; a token that passes here and
-- fails there is refused by its shard, so both give the same answer to any
-- call.
CREATE FUNCTION castle.token_session_id(token text) RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    prefix text := coalesce(current_setting('castle.token_prefix', true), 'oat_');
    encoded text := split_part(substr(token, length(prefix) + 1), '.', 1);
    digits text;
BEGIN
    IF NOT starts_with(token, prefix) OR length(token) > 1473   -- src/token.rs, MAX_TOKEN_LEN
       OR substr(token, length(prefix) + 1) !~ '^[A-Za-z0-9_-]{2,28}\.[A-Za-z0-9_-]+$'
       OR length(encoded) % 4 = 1 THEN
        RETURN NULL;
    END IF;
    -- padded as decode() wants it; any byte but a digit comes out as \nnn
    digits := encode(decode(rpad(translate(encoded, '-_', '+/'), (length(encoded) + 3) / 4 * 4, '='),
                            'base64'), 'escape');
    IF digits !~ '^[1-9][0-9]{0,18}$' OR length(digits) = 19 AND digits > '9223372036854775807'
       -- one spelling per id: decode() ignores the bits a canonical encoder leaves zero
       OR rtrim(translate(encode(convert_to(digits, 'SQL_ASCII'), 'base64'), '+/', '-_'), '=') <> encoded THEN
        RETURN NULL;
    END IF;
    RETURN digits::bigint;
END $$;

-- The number PL/Proxy routes a user by, after the checks castle_sessions
-- makes of a user id (and of a new session's ttl), so that they fail here as
-- they would on one server rather than as a shard's remote error.
CREATE FUNCTION castle_router.user_route(user_id text, ttl interval DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF user_id = '' THEN
        RAISE EXCEPTION 'user_id must not be empty' USING ERRCODE = 'invalid_parameter_value';
    ELSIF ttl <= interval '0' THEN
        RAISE EXCEPTION 'ttl must be a positive interval' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass NULL to use castle.default_ttl (or, for rotate, the old session''s expiry).';
    END IF;
    RETURN castle.user_hash(user_id);
END $$;

CREATE FUNCTION castle_router.user_route(user_id bigint, ttl interval DEFAULT NULL) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT castle_router.user_route(user_id::text, ttl)
$$;
CREATE FUNCTION castle_router.user_route(user_id uuid, ttl interval DEFAULT NULL) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT castle_router.user_route(user_id::text, ttl)
$$;

-- The number PL/Proxy routes a session by: its id, whose low bits are its
-- user's bucket, or a legacy session's bucket.
CREATE FUNCTION castle_router.session_route(session_id bigint) RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    bucket bigint;
BEGIN
    SELECT l.bucket INTO bucket FROM castle_router.legacy_sessions AS l WHERE l.id = session_id;
    RETURN coalesce(bucket, session_id);
END $$;

-- The same for the id inside a token; NULL when the token has none.
CREATE FUNCTION castle_router.token_route(token text) RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN castle_router.session_route(castle.token_session_id(token));
END $$;

-- The one refusal: 28000 and castle.invalid_message, as castle_sessions gives.
CREATE FUNCTION castle_router.refuse() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'invalid_authorization_specification',
        MESSAGE = coalesce(nullif(current_setting('castle.invalid_message', true), ''), 'Not a valid session');
END $$;

---------------------------------------------------------------------------
-- One call on one shard (PL/Proxy). Internal: the castle functions below
-- call these after routing.
---------------------------------------------------------------------------

CREATE FUNCTION castle_router.verify_on(route bigint, token text) RETURNS castle.session
LANGUAGE plproxy AS $$
    CLUSTER 'castle_shards'; RUN ON route;
    SELECT * FROM castle.verify(token);
$$;

CREATE FUNCTION castle_router.is_valid_on(route bigint, token text) RETURNS boolean
LANGUAGE plproxy AS $$
    CLUSTER 'castle_shards'; RUN ON route;
    SELECT castle.is_valid(token);
$$;

CREATE FUNCTION castle_router.revoke_on(route bigint, token text) RETURNS boolean
LANGUAGE plproxy AS $$
    CLUSTER 'castle_shards'; RUN ON route;
    SELECT castle.revoke(token);
$$;

CREATE FUNCTION castle_router.rotate_on(route bigint, token text, ttl interval) RETURNS text
LANGUAGE plproxy AS $$
    CLUSTER 'castle_shards'; RUN ON route;
    SELECT castle.rotate_or_null(token, ttl);
$$;

CREATE FUNCTION castle_router.revoke_session_of(user_id text, session_id bigint) RETURNS boolean
LANGUAGE plproxy AS $$
    CLUSTER 'castle_shards'; RUN ON castle.user_hash(user_id);
    SELECT castle.revoke_session_of(user_id, session_id);
$$;

-- every shard's row
CREATE FUNCTION castle_router.prune_all_shards(batch_size integer) RETURNS SETOF bigint
LANGUAGE plproxy AS $$
    CLUSTER 'castle_shards'; RUN ON ALL;
    SELECT castle.prune(batch_size);
$$;

CREATE FUNCTION castle_router.revoke_everything_all_shards(issued_before timestamptz) RETURNS SETOF bigint
LANGUAGE plproxy AS $$
    CLUSTER 'castle_shards'; RUN ON ALL;
    SELECT castle.revoke_everything(issued_before);
$$;

CREATE FUNCTION castle_router.overview_all_shards(
    OUT live_sessions bigint, OUT users bigint, OUT dead_sessions bigint,
    OUT rotated_sessions bigint, OUT oldest_live timestamptz) RETURNS SETOF record
LANGUAGE plproxy AS $$
    CLUSTER 'castle_shards'; RUN ON ALL;
    SELECT * FROM castle.overview();
$$;

-- each shard's own database's counters
CREATE FUNCTION castle_router.stats_all_shards(
    OUT collecting boolean, OUT stats_reset timestamptz, OUT counts bigint[]) RETURNS SETOF record
LANGUAGE plproxy AS $$
    CLUSTER 'castle_shards'; RUN ON ALL;
    SELECT c.collecting, c.stats_reset, c.counts FROM castle.stats_counters() AS c
     WHERE c.datid = (SELECT d.oid FROM pg_catalog.pg_database AS d
                       WHERE d.datname = pg_catalog.current_database());
$$;

CREATE FUNCTION castle_router.stats_reset_all_shards() RETURNS SETOF integer
LANGUAGE plproxy AS $$
    CLUSTER 'castle_shards'; RUN ON ALL;
    SELECT 1 FROM castle.stats_reset();
$$;

-- Resharding's wait (docs/sharding.md): returns once no transaction in this
-- database that began before `changed` is still open. Take `changed` after
-- the change to castle_shards commits: PL/Proxy reads the new map only in a
-- later transaction, so until then a call may still be on its way to a shard
-- the change retired.
CREATE FUNCTION castle_router.wait_for_calls_before(changed timestamptz, timeout interval DEFAULT '1 min')
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout;
BEGIN
    IF NOT pg_has_role('pg_read_all_stats', 'USAGE') THEN
        RAISE EXCEPTION 'castle_router.wait_for_calls_before needs pg_read_all_stats to see other sessions'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    WHILE EXISTS (SELECT FROM pg_stat_activity AS a
                   WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                     AND coalesce(a.xact_start, a.query_start) < changed AND a.state <> 'idle') LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'calls begun before % still run after %', changed, timeout
                USING ERRCODE = 'lock_not_available';
        END IF;
        PERFORM pg_sleep(0.01);
        PERFORM pg_stat_clear_snapshot();  -- else pg_stat_activity stays as first read
    END LOOP;
END $$;

---------------------------------------------------------------------------
-- The castle API: castle_sessions' signatures.
---------------------------------------------------------------------------

-- by user ----------------------------------------------------------------
CREATE FUNCTION castle.create_session(user_id bigint, ttl interval DEFAULT NULL, data jsonb DEFAULT NULL)
RETURNS text LANGUAGE plproxy VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'castle_shards'; RUN ON castle_router.user_route(user_id, ttl);
$$;
CREATE FUNCTION castle.create_session(user_id uuid, ttl interval DEFAULT NULL, data jsonb DEFAULT NULL)
RETURNS text LANGUAGE plproxy VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'castle_shards'; RUN ON castle_router.user_route(user_id, ttl);
$$;
CREATE FUNCTION castle.create_session(user_id text, ttl interval DEFAULT NULL, data jsonb DEFAULT NULL)
RETURNS text LANGUAGE plproxy VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'castle_shards'; RUN ON castle_router.user_route(user_id, ttl);
$$;

CREATE FUNCTION castle.revoke_all(user_id bigint, except_session bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plproxy VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'castle_shards'; RUN ON castle_router.user_route(user_id);
$$;
CREATE FUNCTION castle.revoke_all(user_id uuid, except_session bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plproxy VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'castle_shards'; RUN ON castle_router.user_route(user_id);
$$;
CREATE FUNCTION castle.revoke_all(user_id text, except_session bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plproxy VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'castle_shards'; RUN ON castle_router.user_route(user_id);
$$;

CREATE FUNCTION castle.sessions_of(user_id bigint)
RETURNS SETOF castle.session LANGUAGE plproxy VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'castle_shards'; RUN ON castle_router.user_route(user_id);
$$;
CREATE FUNCTION castle.sessions_of(user_id uuid)
RETURNS SETOF castle.session LANGUAGE plproxy VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'castle_shards'; RUN ON castle_router.user_route(user_id);
$$;
CREATE FUNCTION castle.sessions_of(user_id text)
RETURNS SETOF castle.session LANGUAGE plproxy VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'castle_shards'; RUN ON castle_router.user_route(user_id);
$$;

CREATE FUNCTION castle.revoke_deleted_user(user_id text)
RETURNS bigint LANGUAGE plproxy VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'castle_shards'; RUN ON castle_router.user_route(user_id);
$$;

-- by the token's id -------------------------------------------------------
CREATE FUNCTION castle.verify(token text) RETURNS castle.session
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    route bigint := castle_router.token_route(token);
    found castle.session;
BEGIN
    IF route IS NOT NULL THEN
        found := castle_router.verify_on(route, token);
    END IF;
    -- a refusal comes back as a row of NULLs: NULL itself, as one server gives
    IF found.id IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN found;
END $$;

CREATE FUNCTION castle.authenticate(token text) RETURNS castle.session
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    route bigint := castle_router.token_route(token);
    found castle.session;
BEGIN
    IF route IS NOT NULL THEN
        found := castle_router.verify_on(route, token);
    END IF;
    IF found.id IS NULL THEN
        PERFORM castle_router.refuse();
    END IF;
    RETURN found;
END $$;

CREATE FUNCTION castle.is_valid(token text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    route bigint := castle_router.token_route(token);
BEGIN
    RETURN route IS NOT NULL AND castle_router.is_valid_on(route, token);
END $$;

CREATE FUNCTION castle.revoke(token text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    route bigint := castle_router.token_route(token);
BEGIN
    RETURN route IS NOT NULL AND castle_router.revoke_on(route, token);
END $$;

CREATE FUNCTION castle.rotate(token text, ttl interval DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    route bigint := castle_router.token_route(token);
    successor text;
BEGIN
    IF ttl <= interval '0' THEN
        -- castle_sessions' order: a bad token is refused first, else the ttl is wrong
        IF route IS NULL OR NOT castle_router.is_valid_on(route, token) THEN
            PERFORM castle_router.refuse();
        END IF;
        RAISE EXCEPTION 'ttl must be a positive interval' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass NULL to use castle.default_ttl (or, for rotate, the old session''s expiry).';
    END IF;
    IF route IS NOT NULL THEN
        successor := castle_router.rotate_on(route, token, ttl);
    END IF;
    IF successor IS NULL THEN
        PERFORM castle_router.refuse();
    END IF;
    RETURN successor;
END $$;

-- by session id -----------------------------------------------------------
CREATE FUNCTION castle.revoke_session(session_id bigint) RETURNS boolean
LANGUAGE plproxy VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'castle_shards'; RUN ON castle_router.session_route(session_id);
$$;

-- on every shard ----------------------------------------------------------
CREATE FUNCTION castle.prune(batch_size integer DEFAULT 10000) RETURNS bigint
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(sum(n), 0)::bigint FROM castle_router.prune_all_shards(batch_size) AS n
$$;


CREATE FUNCTION castle.revoke_everything(issued_before timestamptz DEFAULT NULL) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(sum(n), 0)::bigint FROM castle_router.revoke_everything_all_shards(issued_before) AS n
$$;

CREATE FUNCTION castle.overview(
    OUT live_sessions bigint, OUT users bigint, OUT dead_sessions bigint,
    OUT rotated_sessions bigint, OUT oldest_live timestamptz) RETURNS SETOF record
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    -- a user's sessions all live on one shard, so users add up
    SELECT sum(o.live_sessions)::bigint, sum(o.users)::bigint, sum(o.dead_sessions)::bigint,
           sum(o.rotated_sessions)::bigint, min(o.oldest_live)
      FROM castle_router.overview_all_shards() AS o
$$;

-- The shards' counters, added up, as this database's one row.
CREATE FUNCTION castle.stats_counters(
    OUT datid oid, OUT collecting boolean, OUT stats_reset timestamptz, OUT counts bigint[])
RETURNS SETOF record
LANGUAGE sql VOLATILE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH shard AS (SELECT row_number() OVER () AS n, s.* FROM castle_router.stats_all_shards() AS s)
    SELECT (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database()),
           bool_and(shard.collecting), max(shard.stats_reset),
           CASE WHEN bool_and(shard.collecting) THEN
               (SELECT array_agg(total ORDER BY i)
                  FROM (SELECT c.i, sum(c.v)::bigint AS total
                          FROM shard AS s2, unnest(s2.counts) WITH ORDINALITY AS c(v, i)
                         GROUP BY c.i) AS t)
           END
      FROM shard
$$;

CREATE FUNCTION castle.stats_reset() RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT FROM castle_router.stats_reset_all_shards()
$$;


---------------------------------------------------------------------------
-- The auth context in this database: castle.login binds a session to the
-- transaction for row-level security here. The binding is a row in a
-- temporary table this extension's owner creates, which no other role can
-- write (and which is refused if another role made one of that name first);
-- it goes at commit (ON COMMIT DELETE ROWS), with an abort, and with a
-- rollback to a savepoint taken before the login.
---------------------------------------------------------------------------

-- The binding table, if this backend has one made by the owner.
CREATE FUNCTION castle_router.binding() RETURNS regclass
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regclass := to_regclass('pg_temp.castle_login');
BEGIN
    IF t IS NOT NULL AND (SELECT c.relowner FROM pg_class AS c WHERE c.oid = t)
                         IS DISTINCT FROM (SELECT r.oid FROM pg_roles AS r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'pg_temp.castle_login was made by another role: this connection cannot log in'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN t;
END $$;

CREATE FUNCTION castle.login(token text) RETURNS castle.session
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found castle.session := castle.authenticate(token);
BEGIN
    IF castle_router.binding() IS NULL THEN
        CREATE TEMPORARY TABLE castle_login (user_id text NOT NULL, session_id bigint NOT NULL)
            ON COMMIT DELETE ROWS;
    END IF;
    DELETE FROM pg_temp.castle_login;
    INSERT INTO pg_temp.castle_login VALUES (found.user_id, found.id);
    RETURN found;
END $$;

CREATE FUNCTION castle.logout() RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF castle_router.binding() IS NOT NULL THEN
        DELETE FROM pg_temp.castle_login;
    END IF;
END $$;

CREATE FUNCTION castle.user_id() RETURNS text
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF castle_router.binding() IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT b.user_id FROM pg_temp.castle_login AS b);
END $$;

CREATE FUNCTION castle.session_id() RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF castle_router.binding() IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT b.session_id FROM pg_temp.castle_login AS b);
END $$;

-- The logged-in user, or castle_sessions' refusal of a request-side call
-- with no login.
CREATE FUNCTION castle_router.logged_in_user() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    u text := castle.user_id();
BEGIN
    IF u IS NULL THEN
        RAISE EXCEPTION 'no session is logged in' USING ERRCODE = 'invalid_authorization_specification',
            HINT = 'Call castle.login(token) in this transaction first.';
    END IF;
    RETURN u;
END $$;

CREATE FUNCTION castle.sessions_of() RETURNS SETOF castle.session
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM castle.sessions_of(castle_router.logged_in_user())
$$;

CREATE FUNCTION castle.revoke_own_session(session_id bigint) RETURNS boolean
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT castle_router.revoke_session_of(castle_router.logged_in_user(), session_id)
$$;

CREATE FUNCTION castle.revoke_other_sessions() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT castle.revoke_all(castle_router.logged_in_user(), castle.session_id())
$$;

---------------------------------------------------------------------------
-- What castle_sessions defines in SQL, word for word: prune_all (a batch on
-- every shard per round), revoke_sessions_trigger, the two application roles
-- and the castle.stats view (over the router's sums).
---------------------------------------------------------------------------
-- @SHARED sql/finalize.sql@ (its shared part, put here by scripts/common.sh)

---------------------------------------------------------------------------
-- Privileges, as castle_sessions sets them.
---------------------------------------------------------------------------
REVOKE ALL ON ALL ROUTINES IN SCHEMA castle FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA castle_router FROM PUBLIC;
REVOKE ALL ON TABLE castle_router.legacy_sessions FROM PUBLIC;
GRANT USAGE ON SCHEMA castle TO PUBLIC;
GRANT EXECUTE ON FUNCTION castle.user_id(), castle.session_id(), castle.logout() TO PUBLIC;
GRANT EXECUTE ON FUNCTION castle.user_hash(bigint), castle.user_hash(uuid), castle.user_hash(text),
    castle.token_session_id(text) TO PUBLIC;
REVOKE ALL ON castle.stats FROM PUBLIC;
GRANT SELECT ON castle.stats TO pg_monitor;
GRANT EXECUTE ON FUNCTION castle.stats_counters(), castle.overview() TO pg_monitor;
