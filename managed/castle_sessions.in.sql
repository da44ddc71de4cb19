-- castle_sessions, the SQL edition @VERSION@: the castle API where no library can
-- load (RDS, Cloud SQL, Azure, Supabase, Neon). SQL and PL/pgSQL on pgcrypto,
-- with dblink where present. Install it as the database's owner (no superuser
-- needed), in the database the application uses:
--
--     psql -v ON_ERROR_STOP=1 -1 -f castle_sessions.sql "$DATABASE_URL"
--
-- It creates schema castle: the extension's table, token format and API, the
-- same signatures and, for the core API, lifecycle, rotation with grace and
-- reuse detection, the auth context and the two roles, the same behaviour.
-- Where it differs, and why, is docs/managed.md.
--
-- This file is built from managed/castle_sessions.in.sql by scripts/common.sh
-- (managed_edition): what it shares with the extension (the table, the
-- statements, the grant functions) comes from sql/ and src/queries/ as they
-- are. Edit the .in.sql file, never this one.

DO $check$
BEGIN
    IF pg_catalog.current_setting('server_version_num')::integer < 150000 THEN
        RAISE EXCEPTION 'castle_sessions (SQL edition) needs PostgreSQL 15 or later'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'castle_sessions') THEN
        RAISE EXCEPTION 'the castle_sessions extension is installed here: the SQL edition is for where it cannot be'
            USING ERRCODE = 'duplicate_object';
    END IF;
END $check$;

-- pgcrypto is trusted: a database owner may create it (every managed service
-- offers it). Its functions are called by their schema, wherever it is.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE SCHEMA castle;
-- What the API is made of, and what only the owner may call: out of sight of
-- every other role (no USAGE), so castle holds the API alone, as the
-- extension's schema does.
CREATE SCHEMA castle_internal;

-- @SHARED sql/bootstrap.sql@

-- A plain table, not an extension's: pg_dump keeps its rows and sequence anyway.

-- Every function in castle_internal runs only under the pinned search_path
-- of castle's functions (pg_catalog, pg_temp) and names every table by its
-- schema: none carries a SET clause of its own, which would cost every call
-- and keep a SQL function from being inlined. No other role can reach them
-- (castle_internal grants no USAGE), but for revoke_family, which dblink's
-- role calls and which pins its own.

-- ---------------------------------------------------------------------------
-- Settings. Without the library, castle.* names are placeholders any role may
-- SET, so the edition reads its settings from this row, which only the owner
-- writes (UPDATE castle.settings SET max_sessions = 5). Durations are in
-- seconds, as the extension's settings. In a session of a role that may write
-- this row anyway (its owner, a superuser), castle.* values set in that
-- session override it, so that maintenance and tests read as they do with the
-- extension; every other role's values are never read.
CREATE TABLE castle.settings (
    one_row            boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    max_sessions       integer NOT NULL DEFAULT 3,
    token_prefix       text    NOT NULL DEFAULT 'oat_',
    secret_size        integer NOT NULL DEFAULT 64,
    invalid_message    text    NOT NULL DEFAULT 'Not a valid session',
    default_ttl        integer NOT NULL DEFAULT 0,
    touch_interval     integer NOT NULL DEFAULT 60,
    idle_timeout       integer NOT NULL DEFAULT 0,
    rotate_grace       integer NOT NULL DEFAULT 10,
    log_events         boolean NOT NULL DEFAULT false,
    notify_revocations boolean NOT NULL DEFAULT false
);

-- The settings' rules, the extension's (src/settings.rs): NULL when s is good,
-- else what is wrong, for the message.
CREATE FUNCTION castle_internal.settings_problem(s castle.settings) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN s.max_sessions < 0 THEN 'castle.max_sessions must be 0 (unlimited) or more'
        WHEN s.token_prefix !~ '^[A-Za-z0-9_-]{0,64}$'
            THEN 'castle.token_prefix must be at most 64 characters from [A-Za-z0-9_-]'
        WHEN s.secret_size NOT BETWEEN 22 AND 1024 THEN 'castle.secret_size must be between 22 and 1024'
        WHEN s.invalid_message = '' THEN 'castle.invalid_message must not be empty'
        WHEN s.default_ttl < 0 THEN 'castle.default_ttl must be 0 (never expires) or more'
        WHEN s.touch_interval < -1 THEN 'castle.touch_interval must be -1 (never), 0 (every call) or more'
        WHEN s.idle_timeout < 0 THEN 'castle.idle_timeout must be 0 (off) or more'
        WHEN s.rotate_grace < 0 THEN 'castle.rotate_grace must be 0 or more'
    END
$$;

CREATE FUNCTION castle_internal.settings_checked() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text := castle_internal.settings_problem(NEW);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER settings_checked BEFORE INSERT OR UPDATE ON castle.settings
    FOR EACH ROW EXECUTE FUNCTION castle_internal.settings_checked();

-- Starting values: the database's own castle.* settings, where a superuser set
-- them (ALTER DATABASE ... SET, as for the extension), else the defaults.
INSERT INTO castle.settings DEFAULT VALUES;
DO $import$
DECLARE
    setting text;
BEGIN
    FOR setting IN
        SELECT pg_catalog.unnest(c.setconfig) FROM pg_catalog.pg_db_role_setting AS c
         WHERE c.setrole = 0
           AND c.setdatabase = (SELECT d.oid FROM pg_catalog.pg_database AS d
                                 WHERE d.datname = pg_catalog.current_database())
    LOOP
        CONTINUE WHEN setting !~ '^castle\.[a-z_]+=' OR NOT EXISTS (
            SELECT FROM pg_catalog.pg_attribute AS a
             WHERE a.attrelid = 'castle.settings'::regclass AND a.attnum > 1
               AND a.attname = pg_catalog.split_part(pg_catalog.split_part(setting, '=', 1), '.', 2));
        EXECUTE pg_catalog.format('UPDATE castle.settings SET %I = %L',
            pg_catalog.split_part(pg_catalog.split_part(setting, '=', 1), '.', 2),
            CASE WHEN pg_catalog.split_part(setting, '.', 2) ~ '^(default_ttl|touch_interval|idle_timeout|rotate_grace)='
                 THEN extract(epoch FROM pg_catalog.substr(setting, pg_catalog.strpos(setting, '=') + 1)::interval)::integer::text
                 ELSE pg_catalog.substr(setting, pg_catalog.strpos(setting, '=') + 1) END);
    END LOOP;
END $import$;

-- The settings a call runs with (see castle.settings).
CREATE FUNCTION castle_internal.current_settings() RETURNS castle.settings
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s castle.settings;
    value text;
    problem text;
BEGIN
    SELECT * INTO s FROM castle.settings;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'castle.settings has no row' USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'INSERT INTO castle.settings DEFAULT VALUES, as its owner.';
    END IF;
    -- the role the caller acts as: the role it SET ROLE to, else the one it
    -- logged in as (current_user is the owner here)
    IF NOT pg_catalog.has_table_privilege(COALESCE(NULLIF(pg_catalog.current_setting('role'), 'none'),
                                                   session_user::text)::name,
                                          'castle.settings'::regclass, 'UPDATE') THEN
        RETURN s;
    END IF;
    value := pg_catalog.current_setting('castle.max_sessions', true);
    IF value <> '' THEN s.max_sessions := value::integer; END IF;
    -- a placeholder RESET reads '': an empty value is never an override (an
    -- empty prefix is set in the table)
    value := pg_catalog.current_setting('castle.token_prefix', true);
    IF value <> '' THEN s.token_prefix := value; END IF;
    value := pg_catalog.current_setting('castle.secret_size', true);
    IF value <> '' THEN s.secret_size := value::integer; END IF;
    value := pg_catalog.current_setting('castle.invalid_message', true);
    IF value <> '' THEN s.invalid_message := value; END IF;
    value := pg_catalog.current_setting('castle.default_ttl', true);
    IF value <> '' THEN s.default_ttl := castle_internal.seconds(value); END IF;
    value := pg_catalog.current_setting('castle.touch_interval', true);
    IF value <> '' THEN s.touch_interval := castle_internal.seconds(value); END IF;
    value := pg_catalog.current_setting('castle.idle_timeout', true);
    IF value <> '' THEN s.idle_timeout := castle_internal.seconds(value); END IF;
    value := pg_catalog.current_setting('castle.rotate_grace', true);
    IF value <> '' THEN s.rotate_grace := castle_internal.seconds(value); END IF;
    value := pg_catalog.current_setting('castle.log_events', true);
    IF value <> '' THEN s.log_events := value::boolean; END IF;
    value := pg_catalog.current_setting('castle.notify_revocations', true);
    IF value <> '' THEN s.notify_revocations := value::boolean; END IF;
    problem := castle_internal.settings_problem(s);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid value for a castle.* setting: %', problem USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN s;
END $$;

-- A duration as the extension's settings take it: seconds, or with a unit ('2h', '30d').
CREATE FUNCTION castle_internal.seconds(value text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN value ~ '^\s*-?[0-9]+\s*$' THEN value::integer
                ELSE extract(epoch FROM value::interval)::integer END
$$;

-- ---------------------------------------------------------------------------
-- The owner's secret key: it signs a login's binding (castle.login) and keys
-- the hash that names a user's advisory lock (castle_internal.lock_user), so
-- no other role can forge the one or name the other. Only the owner reads it.
CREATE TABLE castle_internal.keys (
    one_row     boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    context_key bytea NOT NULL CHECK (pg_catalog.octet_length(context_key) = 32)
);

-- How a reuse's family is revoked in a transaction of its own: a dblink
-- connection string (castle.use_dblink writes it; it holds a password, so
-- only the owner reads it). No row: in the caller's transaction.
CREATE TABLE castle_internal.autonomous (
    one_row  boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    conninfo text NOT NULL,
    dblink   name NOT NULL   -- the schema dblink is installed in
);

-- pgcrypto, called by the schema it is in: each wrapper is written with that
-- schema's name, so no search_path ever decides which function runs.
DO $pgcrypto$
DECLARE
    crypto name := (SELECT n.nspname FROM pg_catalog.pg_extension AS e
                      JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace
                     WHERE e.extname = 'pgcrypto');
    crc_table bigint[] := '{}';
    crc bigint;
BEGIN
    EXECUTE pg_catalog.format($f$
        CREATE FUNCTION castle_internal.random_bytes(n integer) RETURNS bytea
        LANGUAGE sql VOLATILE STRICT
        AS 'SELECT %I.gen_random_bytes(n)' $f$, crypto);
    EXECUTE pg_catalog.format($f$
        CREATE FUNCTION castle_internal.hmac_sha256(message bytea, key bytea) RETURNS bytea
        LANGUAGE sql IMMUTABLE STRICT
        AS 'SELECT %I.hmac(message, key, ''sha256'')' $f$, crypto);
    INSERT INTO castle_internal.keys (context_key) SELECT castle_internal.random_bytes(32);
    -- CRC-32 (zlib's, as the seed's checksum): PostgreSQL 18 has it built in;
    -- before, a table-driven loop with the table written in as a constant
    IF pg_catalog.to_regprocedure('pg_catalog.crc32(bytea)') IS NOT NULL THEN
        CREATE FUNCTION castle_internal.crc32(data bytea) RETURNS bigint
        LANGUAGE sql IMMUTABLE STRICT
        AS 'SELECT pg_catalog.crc32(data)';
    ELSE
        FOR byte IN 0..255 LOOP
            crc := byte;
            FOR bit IN 1..8 LOOP
                crc := CASE WHEN crc & 1 = 1 THEN (crc >> 1) # x'EDB88320'::bigint ELSE crc >> 1 END;
            END LOOP;
            crc_table := crc_table || crc;
        END LOOP;
        -- the table is a constant of the loop's expression, never copied
        EXECUTE pg_catalog.format($f$
            CREATE FUNCTION castle_internal.crc32(data bytea) RETURNS bigint
            LANGUAGE plpgsql IMMUTABLE STRICT AS $body$
            DECLARE
                crc bigint := 4294967295;
            BEGIN
                FOR i IN 0 .. pg_catalog.length(data) - 1 LOOP
                    crc := (%L::bigint[])[((crc # pg_catalog.get_byte(data, i)) & 255) + 1] # (crc >> 8);
                END LOOP;
                RETURN crc # 4294967295;
            END $body$ $f$, crc_table);
    END IF;
END $pgcrypto$;

-- ---------------------------------------------------------------------------
-- The token codec (the extension's src/token.rs):
--   token  = prefix || base64url(decimal id) || "." || base64url(secret)
--   secret = random || decimal(crc32(random))     -- random: [A-Za-z0-9_-]{n}
--   hash   = lowercase hex(sha256(secret))         -- the only thing stored

CREATE FUNCTION castle_internal.base64url(data bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    -- encode() breaks lines every 76 characters: drop them with the padding
    SELECT pg_catalog.translate(pg_catalog.encode(data, 'base64'), E'+/=\n', '-_')
$$;

-- A secret from random bytes: each byte's low six bits pick a character, then
-- the checksum of those characters.
CREATE FUNCTION castle_internal.secret_from_bytes(random bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    WITH chars AS (
        SELECT pg_catalog.string_agg(pg_catalog.substr(
                   'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_',
                   (pg_catalog.get_byte(random, i) & 63) + 1, 1), '' ORDER BY i) AS text
          FROM pg_catalog.generate_series(0, pg_catalog.length(random) - 1) AS i
    )
    SELECT c.text || castle_internal.crc32(pg_catalog.convert_to(c.text, 'UTF8'))::text FROM chars AS c
$$;

-- A fresh secret: `size` characters, each six bits of the CSPRNG (base64 of
-- whole groups of three random bytes is exactly the alphabet, uniformly,
-- once + and / are - and _), and their checksum. The extension draws a byte
-- for each character and keeps its low six bits: the same distribution.
CREATE FUNCTION castle_internal.new_secret(size integer) RETURNS text
LANGUAGE plpgsql VOLATILE STRICT AS $$
DECLARE
    chars CONSTANT text := pg_catalog.left(pg_catalog.translate(pg_catalog.encode(
        castle_internal.random_bytes((size + 3) / 4 * 3), 'base64'), E'+/\n', '-_'), size);
BEGIN
    RETURN chars || castle_internal.crc32(pg_catalog.convert_to(chars, 'UTF8'))::text;
END $$;

-- STABLE (convert_to is) and not STRICT, so that the planner inlines it; its
-- callers never pass a NULL.
CREATE FUNCTION castle_internal.encode_token(prefix text, id bigint, secret text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT prefix || castle_internal.base64url(pg_catalog.convert_to(id::text, 'UTF8'))
        || '.' || castle_internal.base64url(pg_catalog.convert_to(secret, 'UTF8'))
$$;

-- A token taken apart: its session id and secret, or NULLs for anything a
-- correct encoder could not have produced (base64url unpadded and canonical:
-- one secret has one spelling; the id a plain positive decimal bigint).
-- Touches no table. The checksum is not checked: the hash is, and refuses the
-- same tokens.
CREATE FUNCTION castle_internal.decode_token(token text, prefix text, OUT session_id bigint, OUT secret bytea)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    rest text;
    dot integer;
    id_part text;
    secret_part text;
    digits text;
BEGIN
    -- 1473: no genuine token is longer (a 64-byte prefix, a 19-digit id, the
    -- largest secret with its checksum)
    IF token IS NULL OR pg_catalog.octet_length(token) > 1473 OR NOT pg_catalog.starts_with(token, prefix) THEN
        RETURN;
    END IF;
    rest := pg_catalog.substr(token, pg_catalog.length(prefix) + 1);
    dot := pg_catalog.strpos(rest, '.');
    id_part := pg_catalog.left(rest, dot - 1);
    secret_part := pg_catalog.substr(rest, dot + 1);
    -- whole groups of four, then a canonical tail (its unused bits zero)
    IF dot = 0
       OR id_part !~ '^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$'
       OR secret_part !~ '^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$'
       OR id_part = '' OR secret_part = '' THEN
        RETURN;
    END IF;
    -- 'escape' shows any byte outside ASCII as a backslash sequence, which the
    -- pattern refuses, instead of an encoding error
    digits := pg_catalog.encode(pg_catalog.decode(pg_catalog.translate(id_part, '-_', '+/')
        || pg_catalog.repeat('=', (4 - pg_catalog.length(id_part) % 4) % 4), 'base64'), 'escape');
    IF digits !~ '^[1-9][0-9]{0,18}$'
       OR (pg_catalog.length(digits) = 19 AND digits > '9223372036854775807') THEN
        RETURN;
    END IF;
    session_id := digits::bigint;
    secret := pg_catalog.decode(pg_catalog.translate(secret_part, '-_', '+/')
        || pg_catalog.repeat('=', (4 - pg_catalog.length(secret_part) % 4) % 4), 'base64');
END $$;

CREATE FUNCTION castle_internal.hash_secret(secret bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT pg_catalog.encode(pg_catalog.sha256(secret), 'hex')
$$;

-- A rotation's successor secret (token.rs, successor_secret): HMAC-SHA256 of
-- the replaced session's id and secret under the rotation key, in counter mode
-- to `size` bytes, then made a secret like random bytes.
CREATE FUNCTION castle_internal.successor_secret(key bytea, rotated_id bigint, rotated_secret bytea, size integer)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT castle_internal.secret_from_bytes(pg_catalog.substr(pg_catalog.string_agg(
               castle_internal.hmac_sha256('castle_sessions successor'::bytea || '\x00'::bytea
                   || pg_catalog.int4send(block) || pg_catalog.int8send(rotated_id) || rotated_secret, key),
               ''::bytea ORDER BY block), 1, size))
      FROM pg_catalog.generate_series(0, (size - 1) / 32) AS block
$$;

-- ---------------------------------------------------------------------------
-- The shared statements, as the extension prepares them (src/queries/), each
-- a function whose parameters are the statement's $1, $2...

CREATE FUNCTION castle_internal.trim_sessions(text, bigint, integer, timestamptz) RETURNS SETOF bigint
LANGUAGE sql VOLATILE AS $q$
    -- @QUERY src/queries/trim_sessions.sql@
$q$;
CREATE FUNCTION castle_internal.delete_user_sessions(text, bigint) RETURNS SETOF bigint
LANGUAGE sql VOLATILE AS $q$
    -- @QUERY src/queries/delete_user_sessions.sql@
$q$;
CREATE FUNCTION castle_internal.delete_whole_family(bigint, text) RETURNS SETOF bigint
LANGUAGE sql VOLATILE AS $q$
    -- @QUERY src/queries/delete_whole_family.sql@
$q$;
CREATE FUNCTION castle_internal.end_graces(bigint, text) RETURNS void
LANGUAGE sql VOLATILE AS $q$
    -- @QUERY src/queries/end_graces.sql@
$q$;
CREATE FUNCTION castle_internal.forget_rotated(bigint, integer, timestamptz) RETURNS void
LANGUAGE sql VOLATILE AS $q$
    -- @QUERY src/queries/forget_rotated.sql@
$q$;
CREATE FUNCTION castle_internal.recent_rotations(bigint, timestamptz) RETURNS bigint
LANGUAGE sql STABLE AS $q$
    -- @QUERY src/queries/recent_rotations.sql@
$q$;
CREATE FUNCTION castle_internal.live_sessions(text, integer, timestamptz) RETURNS SETOF castle.session
LANGUAGE sql STABLE AS $q$
    -- @QUERY src/queries/live_sessions.sql@
$q$;
CREATE FUNCTION castle_internal.prune_sessions(integer, integer) RETURNS SETOF bigint
LANGUAGE sql VOLATILE AS $q$
    -- @QUERY src/queries/prune_sessions.sql@
$q$;
CREATE FUNCTION castle_internal.read_successor(bigint) RETURNS bigint
LANGUAGE sql STABLE AS $q$
    -- @QUERY src/queries/read_successor.sql@
$q$;
CREATE FUNCTION castle_internal.next_in_family(bigint, bigint, OUT id bigint, OUT hash text, OUT rotated_at timestamptz)
LANGUAGE sql STABLE AS $q$
    -- @QUERY src/queries/next_in_family.sql@
$q$;
CREATE FUNCTION castle_internal.rotate_session(bigint, timestamptz,
    OUT data jsonb, OUT family bigint, OUT rotated_at timestamptz, OUT live boolean)
LANGUAGE sql VOLATILE AS $q$
    -- @QUERY src/queries/rotate_session.sql@
$q$;
CREATE FUNCTION castle_internal.revoke_everything_before(timestamptz) RETURNS bigint
LANGUAGE sql VOLATILE AS $q$
    -- @QUERY src/queries/revoke_everything.sql@
$q$;
CREATE FUNCTION castle_internal.overview_of(integer, OUT live_sessions bigint, OUT users bigint,
    OUT dead_sessions bigint, OUT rotated_sessions bigint, OUT oldest_live timestamptz)
LANGUAGE sql STABLE AS $q$
    -- @QUERY src/queries/overview.sql@
$q$;

-- ---------------------------------------------------------------------------
-- Events: the server-log line (castle.log_events) and the notification
-- (castle.notify_revocations) of the extension's src/events.rs. RAISE LOG
-- reaches the client only if it asks for LOG; it holds ids, never a token.
CREATE FUNCTION castle_internal.event(s castle.settings, event text, sessions bigint[], user_id text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    payload jsonb;
BEGIN
    IF s.log_events AND event <> 'rotate' THEN
        RAISE LOG 'castle_sessions: % of % session(s)%: %', event, pg_catalog.cardinality(sessions),
            CASE WHEN user_id IS NULL THEN '' ELSE ' of user ' || user_id END, sessions;
    END IF;
    IF s.notify_revocations AND pg_catalog.cardinality(sessions) > 0 THEN
        payload := pg_catalog.jsonb_build_object('event', event);
        IF user_id IS NOT NULL THEN
            payload := payload || pg_catalog.jsonb_build_object('user', user_id);
        END IF;
        payload := payload || CASE WHEN pg_catalog.cardinality(sessions) > 100
            THEN pg_catalog.jsonb_build_object('count', pg_catalog.cardinality(sessions), 'all', true)
            ELSE pg_catalog.jsonb_build_object('sessions', pg_catalog.to_jsonb(sessions)) END;
        PERFORM pg_catalog.pg_notify('castle_revocations', payload::text);
    END IF;
END $$;

-- ---------------------------------------------------------------------------
-- Users' locks. Every sign-in, rotation and sign-out of a user first takes the
-- user's lock, so trimming is exact under any concurrency: a transaction-level
-- advisory lock whose key is a keyed hash of the user id (the key is the
-- owner's), so no other role can name it to hold a user's sign-ins back.
--
-- A lock held now does not help a REPEATABLE READ snapshot taken before
-- another sign-in committed: it would trim by the wrong set of sessions. So a
-- transaction at REPEATABLE READ or above also writes the user's row of
-- castle.user_locks, which fails with 40001 (as the extension refuses a stale
-- snapshot) when another transaction wrote it after that snapshot; and every
-- sign-in that leaves the user at the limit writes it too (mark_user), as do
-- sign-outs, so that a sign-in such a snapshot cannot see is always one that
-- wrote it. Sign-ins under the limit at READ COMMITTED write no lock row.
CREATE FUNCTION castle_internal.mark_user(marked text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO castle.user_locks AS l (user_id, locked_at) VALUES (marked, pg_catalog.clock_timestamp())
    ON CONFLICT ON CONSTRAINT user_locks_pkey DO UPDATE SET locked_at = excluded.locked_at;
END $$;

-- PL/pgSQL, not SQL, here and wherever a statement runs on every sign-in: a
-- PL/pgSQL function keeps its statements' plans for the session, a SQL
-- function (not inlined) plans them again at every call.
CREATE FUNCTION castle_internal.lock_user(locked text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(('x' || pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(
        (SELECT k.context_key FROM castle_internal.keys AS k)
        || pg_catalog.convert_to('castle_sessions user lock/' || locked, 'UTF8')), 'hex'), 16))::bit(64)::bigint);
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM castle_internal.mark_user(locked);
    END IF;
END $$;

CREATE FUNCTION castle_internal.refuse_on_standby(function_name text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF pg_catalog.pg_is_in_recovery() THEN
        RAISE EXCEPTION 'castle.% cannot run on a read-only standby', function_name
            USING ERRCODE = 'read_only_sql_transaction',
                  DETAIL = 'Sessions are created and revoked on the primary; authenticate works on standbys.';
    END IF;
END $$;

-- A user id as stored: refused when NULL (22004) or empty (22023).
CREATE FUNCTION castle_internal.user_key(user_id text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF user_id = '' THEN
        RAISE EXCEPTION 'user_id must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN user_id;
END $$;

-- ---------------------------------------------------------------------------
-- Issuing: a session for user_id with this secret, after making room under
-- castle.max_sessions. Returns the new id.
CREATE FUNCTION castle_internal.insert_session(s castle.settings, user_id text, secret text, called_at timestamptz,
                                      expires_at timestamptz, data jsonb, family bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    trimmed bigint[];
    held bigint;
    new_id bigint;
BEGIN
    IF pg_catalog.current_setting('transaction_read_only') = 'on' THEN
        PERFORM castle_internal.refuse_on_standby('create_session');
        RAISE EXCEPTION 'cannot execute castle.create_session() in a read-only transaction'
            USING ERRCODE = 'read_only_sql_transaction';
    END IF;
    IF s.max_sessions > 0 THEN
        PERFORM castle_internal.lock_user(user_id);
        -- most sign-ins find the user under the limit from the index alone
        held := (SELECT pg_catalog.count(*) FROM (SELECT FROM castle.sessions AS o
                                                   WHERE o.user_id = insert_session.user_id
                                                   LIMIT s.max_sessions) AS e);
        IF held >= s.max_sessions - 1 THEN
            PERFORM castle_internal.mark_user(user_id);
        END IF;
        IF held >= s.max_sessions THEN
            trimmed := ARRAY(SELECT castle_internal.trim_sessions(user_id, s.max_sessions, s.idle_timeout, called_at));
            IF pg_catalog.cardinality(trimmed) > 0 THEN
                PERFORM castle_internal.event(s, 'trim', trimmed, user_id);
            END IF;
        END IF;
    END IF;
    INSERT INTO castle.sessions (hash, user_id, created_at, updated_at, expires_at, family_id, data)
    VALUES (castle_internal.hash_secret(pg_catalog.convert_to(secret, 'UTF8')), user_id, called_at, called_at,
            expires_at, family, data)
    RETURNING id INTO new_id;
    RETURN new_id;
END $$;

CREATE FUNCTION castle_internal.checked_ttl(ttl interval) RETURNS interval
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF ttl <= interval '0' THEN
        RAISE EXCEPTION 'ttl must be a positive interval' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'Pass NULL to use castle.default_ttl (or, for rotate, the old session''s expiry).';
    END IF;
    RETURN ttl;
END $$;

CREATE FUNCTION castle.create_session(user_id text, ttl interval DEFAULT NULL, data jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s CONSTANT castle.settings := castle_internal.current_settings();
    stored CONSTANT text := castle_internal.user_key(user_id);
    called_at CONSTANT timestamptz := pg_catalog.clock_timestamp();
    lifetime CONSTANT interval := coalesce(castle_internal.checked_ttl(ttl),
        CASE WHEN s.default_ttl > 0 THEN pg_catalog.make_interval(secs => s.default_ttl) END);
    secret CONSTANT text := castle_internal.new_secret(s.secret_size);
    new_id bigint;
BEGIN
    new_id := castle_internal.insert_session(s, stored, secret, called_at, called_at + lifetime, data, NULL);
    IF s.log_events THEN
        RAISE LOG 'castle_sessions: session % created for user %', new_id, stored;
    END IF;
    RETURN castle_internal.encode_token(s.token_prefix, new_id, secret);
END $$;

-- The API's functions are PL/pgSQL wherever they run a statement on every
-- call: a SQL function with a SET clause is never inlined, and plans its
-- statement again at every call.
CREATE FUNCTION castle.create_session(user_id bigint, ttl interval DEFAULT NULL, data jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN castle.create_session(user_id::text, ttl, data);
END $$;

CREATE FUNCTION castle.create_session(user_id uuid, ttl interval DEFAULT NULL, data jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN castle.create_session(user_id::text, ttl, data);
END $$;

-- ---------------------------------------------------------------------------
-- Checking a token (the extension's auth.rs, find).

-- What a check found: the session the token stands for (the one it names,
-- or within its grace the newest of the family it was rotated away from),
-- the session it names, the family, the time of the call and the secret.
CREATE TYPE castle_internal.found AS (
    id         bigint,
    user_id    text,
    created_at timestamptz,
    updated_at timestamptz,
    expires_at timestamptz,
    used_at    timestamptz,
    data       jsonb,
    presented  bigint,
    family     bigint,
    called_at  timestamptz,
    secret     bytea
);

-- The session a token names, or NULL for any bad token. Expiry and idleness
-- are judged at the time of the call. With `touch`, a use is written when
-- castle.touch_interval says one is due: in this transaction (the edition has
-- no worker), never waiting for the row, and not in a read-only, REPEATABLE
-- READ or SERIALIZABLE transaction or on a standby.
CREATE FUNCTION castle_internal.find(token text, s castle.settings, touch boolean) RETURNS castle_internal.found
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    decoded record;
    named castle.sessions;
    hit castle_internal.found;
    successor bigint;
BEGIN
    decoded := castle_internal.decode_token(token, s.token_prefix);
    IF decoded.session_id IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO named FROM castle.sessions AS k WHERE k.id = decoded.session_id;
    IF NOT FOUND OR named.hash IS DISTINCT FROM castle_internal.hash_secret(decoded.secret) THEN
        RETURN NULL;
    END IF;
    hit.called_at := pg_catalog.clock_timestamp();
    hit.presented := named.id;
    hit.family := coalesce(named.family_id, named.id);
    hit.secret := decoded.secret;
    IF named.rotated_at IS NOT NULL THEN
        IF named.expires_at <= hit.called_at THEN
            RETURN NULL;     -- a rotated token of an expired family is only expired
        ELSIF hit.called_at < named.rotated_at + pg_catalog.make_interval(secs => s.rotate_grace) THEN
            successor := castle_internal.read_successor(hit.family);
            SELECT * INTO named FROM castle.sessions AS k WHERE k.id = successor;
            IF NOT FOUND THEN
                RETURN NULL;
            END IF;
        ELSE
            PERFORM castle_internal.reuse(s, hit.family, hit.presented);
            RETURN NULL;
        END IF;
    END IF;
    IF named.expires_at <= hit.called_at
       OR (s.idle_timeout > 0 AND coalesce(named.used_at, named.created_at)
                                  <= hit.called_at - pg_catalog.make_interval(secs => s.idle_timeout)) THEN
        RETURN NULL;
    END IF;
    hit.id := named.id;
    hit.user_id := named.user_id;
    hit.created_at := named.created_at;
    hit.updated_at := named.updated_at;
    hit.expires_at := named.expires_at;
    hit.used_at := named.used_at;
    hit.data := named.data;
    IF touch AND s.touch_interval >= 0
       AND (named.used_at IS NULL OR named.used_at <= hit.called_at - pg_catalog.make_interval(secs => s.touch_interval))
       AND pg_catalog.current_setting('transaction_read_only') = 'off'
       AND pg_catalog.current_setting('transaction_isolation') = 'read committed' THEN
        UPDATE castle.sessions AS t
           SET used_at = hit.called_at, updated_at = GREATEST(t.updated_at, hit.called_at)
         WHERE t.id = (SELECT l.id FROM castle.sessions AS l
                        WHERE l.id = hit.id AND (l.used_at IS NULL OR l.used_at < hit.called_at)
                          FOR NO KEY UPDATE SKIP LOCKED);
    END IF;
    RETURN hit;
END $$;

CREATE FUNCTION castle_internal.as_session(f castle_internal.found) RETURNS castle.session
LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(f.id, f.user_id, f.created_at, f.updated_at, f.expires_at, f.used_at, f.data)::castle.session
$$;

-- Every refusal is this one error: 28000 and castle.invalid_message, with no
-- detail or hint.
CREATE FUNCTION castle_internal.refuse(s castle.settings) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'invalid_authorization_specification', MESSAGE = s.invalid_message;
END $$;

CREATE FUNCTION castle.authenticate(token text) RETURNS castle.session
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s CONSTANT castle.settings := castle_internal.current_settings();
    f CONSTANT castle_internal.found := castle_internal.find(token, s, true);
BEGIN
    IF f.id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_authorization_specification', MESSAGE = s.invalid_message;
    END IF;
    RETURN castle_internal.as_session(f);
END $$;

CREATE FUNCTION castle.verify(token text) RETURNS castle.session
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f CONSTANT castle_internal.found := castle_internal.find(token, castle_internal.current_settings(), true);
BEGIN
    IF f.id IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN castle_internal.as_session(f);
END $$;

CREATE FUNCTION castle.is_valid(token text) RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (castle_internal.find(token, castle_internal.current_settings(), false)).id IS NOT NULL;
END $$;

-- ---------------------------------------------------------------------------
-- Reuse: a token rotated away came back after its grace. Every session of
-- its family is revoked, in a transaction of its own when castle.use_dblink
-- set one up (the caller's refusal rolls back its own), else in the caller's
-- transaction: kept when it commits (verify, is_valid, revoke), lost when the
-- refusal rolls it back (authenticate, login, rotate), in which case the next
-- verify or is_valid of the token revokes it. Never raises.
CREATE FUNCTION castle_internal.reuse(s castle.settings, family bigint, presented bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    link castle_internal.autonomous;
BEGIN
    IF pg_catalog.pg_is_in_recovery() THEN
        RAISE LOG 'castle_sessions: reuse of a rotated token on a standby: family of session % is revoked when the token next reaches the primary', presented;
        RETURN;
    END IF;
    SELECT * INTO link FROM castle_internal.autonomous;
    IF FOUND THEN
        BEGIN
            EXECUTE pg_catalog.format('SELECT r.n FROM %I.dblink($1, $2) AS r (n bigint)', link.dblink)
                USING link.conninfo,
                      pg_catalog.format('SELECT castle_internal.revoke_family(%s, %s)', family, presented);
            RETURN;
        EXCEPTION WHEN OTHERS THEN
            -- the message of a failed connection may hold the connection
            -- string: only its SQLSTATE is logged
            RAISE LOG 'castle_sessions: family of session % not revoked through dblink (SQLSTATE %): revoking it in this transaction', presented, SQLSTATE;
        END;
    END IF;
    PERFORM castle_internal.revoke_family(family, presented);
END $$;

-- Deletes every session of `family` under its user's lock: what a reuse
-- does, run through dblink by the role castle.use_dblink made (its only
-- right), or in the caller's transaction.
CREATE FUNCTION castle_internal.revoke_family(family bigint, presented bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '2s' AS $$
DECLARE
    s CONSTANT castle.settings := castle_internal.current_settings();
    owner_of text;
    revoked bigint[];
BEGIN
    SELECT k.user_id INTO owner_of FROM castle.sessions AS k WHERE k.id = family OR k.family_id = family LIMIT 1;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    PERFORM castle_internal.lock_user(owner_of);
    PERFORM castle_internal.mark_user(owner_of);
    revoked := ARRAY(SELECT castle_internal.delete_whole_family(family, owner_of));
    RAISE LOG 'castle_sessions: reuse of a rotated token: family of session % revoked', presented;
    PERFORM castle_internal.event(s, 'family', revoked);
    RETURN pg_catalog.cardinality(revoked);
END $$;

-- A value in a libpq connection string: single-quoted, with \ and ' escaped.
CREATE FUNCTION castle_internal.conninfo_value(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT '''' || pg_catalog.replace(pg_catalog.replace(value, '\', '\\'), '''', '\''') || ''''
$$;

-- Sets up the transaction of its own a reuse's revocation runs in: a login
-- role that may only run castle_internal.revoke_family, with a new random password,
-- and a dblink connection string for it, tried before it is kept. The
-- database's owner runs it once, as CALL castle.use_dblink() outside a
-- transaction block (the role must be committed before dblink can log in as
-- it). It needs CREATEROLE, which managed services give the owner, and
-- dblink, which they offer; the server must ask that role for a password on
-- `host` (managed services always do). A procedure that commits may carry no
-- SET clause: every name in it is qualified instead.
CREATE PROCEDURE castle.use_dblink(role_name name DEFAULT 'castle_revoker', host text DEFAULT NULL,
                                   port integer DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    dblink_schema name := (SELECT n.nspname FROM pg_catalog.pg_extension AS e
                             JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
                            WHERE e.extname OPERATOR(pg_catalog.=) 'dblink');
    password text := pg_catalog.encode(castle_internal.random_bytes(24), 'hex');
    conninfo text;
BEGIN
    IF dblink_schema IS NULL THEN
        RAISE EXCEPTION 'dblink is not installed in this database' USING ERRCODE = 'undefined_object',
            HINT = 'CREATE EXTENSION dblink (as your service allows), then CALL castle.use_dblink() again.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) role_name) THEN
        EXECUTE pg_catalog.format('ALTER ROLE %I LOGIN PASSWORD %L', role_name, password);
    ELSE
        EXECUTE pg_catalog.format('CREATE ROLE %I LOGIN PASSWORD %L', role_name, password);
    END IF;
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA castle_internal TO %I', role_name);
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION castle_internal.revoke_family(bigint, bigint) TO %I', role_name);
    conninfo := pg_catalog.format('host=%s port=%s dbname=%s user=%s password=%s application_name=castle_revoker',
        castle_internal.conninfo_value(COALESCE(host, pg_catalog.host(pg_catalog.inet_server_addr()), 'localhost')),
        COALESCE(port, pg_catalog.inet_server_port(), pg_catalog.current_setting('port')::integer),
        castle_internal.conninfo_value(pg_catalog.current_database()), castle_internal.conninfo_value(role_name), password);
    COMMIT;
    -- tried now, so a bad setup is an error here and not a silent fallback later
    EXECUTE pg_catalog.format('SELECT r.n FROM %I.dblink($1, $2) AS r (n bigint)', dblink_schema)
        USING conninfo, 'SELECT castle_internal.revoke_family(0, 0)';
    DELETE FROM castle_internal.autonomous;
    INSERT INTO castle_internal.autonomous (conninfo, dblink) VALUES (conninfo, dblink_schema);
END $$;

-- ---------------------------------------------------------------------------
-- The auth context (the extension's context.rs): castle.login binds the
-- session to the current transaction; castle.user_id() and
-- castle.session_id() read it back, for row-level security.
--
-- The binding is a transaction-local setting, castle_internal.binding, signed with
-- the owner's key over the backend, the transaction's start and the session:
-- a role may SET it, but cannot forge a value that any function accepts, nor
-- carry one into another transaction. It ends with the transaction and with a
-- rollback to a savepoint taken before the login, as a setting does, and works
-- in read-only transactions and on standbys.

CREATE FUNCTION castle_internal.binding_mac(session_id bigint, user_hex text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN pg_catalog.encode(castle_internal.hmac_sha256(pg_catalog.convert_to(pg_catalog.concat_ws('/',
               pg_catalog.pg_backend_pid(),
               (extract(epoch FROM pg_catalog.now()) * 1000000)::bigint, session_id, user_hex), 'UTF8'),
               (SELECT k.context_key FROM castle_internal.keys AS k)), 'hex');
END $$;

-- The binding in force: (session id, user id), or NULLs.
CREATE FUNCTION castle_internal.binding(OUT session_id bigint, OUT user_id text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    value CONSTANT text := pg_catalog.current_setting('castle_internal.binding', true);
    parts text[];
BEGIN
    IF value IS NULL OR value = '' THEN
        RETURN;
    END IF;
    parts := pg_catalog.string_to_array(value, ':');
    IF pg_catalog.cardinality(parts) = 3 AND parts[1] ~ '^[1-9][0-9]{0,18}$' AND parts[2] ~ '^([0-9a-f]{2})+$'
       AND parts[3] = castle_internal.binding_mac(parts[1]::bigint, parts[2]) THEN
        session_id := parts[1]::bigint;
        user_id := pg_catalog.convert_from(pg_catalog.decode(parts[2], 'hex'), pg_catalog.getdatabaseencoding());
    END IF;
END $$;

CREATE FUNCTION castle.login(token text) RETURNS castle.session
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s CONSTANT castle.settings := castle_internal.current_settings();
    f CONSTANT castle_internal.found := castle_internal.find(token, s, true);
    user_hex text;
BEGIN
    IF f.id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_authorization_specification', MESSAGE = s.invalid_message;
    END IF;
    -- the first statement of a transaction has the transaction's timestamp:
    -- outside a transaction block the binding ends with this statement
    IF pg_catalog.statement_timestamp() = pg_catalog.transaction_timestamp() THEN
        RAISE WARNING 'castle.login outside a transaction block binds nothing beyond this statement';
    END IF;
    user_hex := pg_catalog.encode(pg_catalog.convert_to(f.user_id, pg_catalog.getdatabaseencoding()), 'hex');
    PERFORM pg_catalog.set_config('castle_internal.binding',
        pg_catalog.concat_ws(':', f.id, user_hex, castle_internal.binding_mac(f.id, user_hex)), true);
    RETURN castle_internal.as_session(f);
END $$;

CREATE FUNCTION castle.logout() RETURNS void
LANGUAGE sql VOLATILE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT FROM pg_catalog.set_config('castle_internal.binding', '', true)
$$;

CREATE FUNCTION castle.user_id() RETURNS text
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (castle_internal.binding()).user_id;
END $$;

CREATE FUNCTION castle.session_id() RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (castle_internal.binding()).session_id;
END $$;

-- The logged-in user, for the request-side functions; 28000 when castle.login
-- bound nothing in this transaction.
CREATE FUNCTION castle_internal.logged_in_user() RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    bound CONSTANT text := (castle_internal.binding()).user_id;
BEGIN
    IF bound IS NULL THEN
        RAISE EXCEPTION 'no session is logged in' USING ERRCODE = 'invalid_authorization_specification',
            DETAIL = 'Call castle.login(token) in this transaction first.';
    END IF;
    RETURN bound;
END $$;

-- ---------------------------------------------------------------------------
-- Lifecycle (the extension's lifecycle.rs).

-- Deletes session `id`'s family, if it is `only_user`'s (when given), under
-- the user's lock. Returns the ids.
CREATE FUNCTION castle_internal.delete_family_of_session(id bigint, only_user text) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    family bigint;
    owner_of text;
BEGIN
    SELECT coalesce(k.family_id, k.id), k.user_id INTO family, owner_of
      FROM castle.sessions AS k WHERE k.id = delete_family_of_session.id;
    IF NOT FOUND OR (only_user IS NOT NULL AND only_user IS DISTINCT FROM owner_of) THEN
        RETURN '{}';
    END IF;
    PERFORM castle_internal.lock_user(owner_of);
    PERFORM castle_internal.mark_user(owner_of);
    RETURN ARRAY(SELECT castle_internal.delete_whole_family(family, owner_of));
END $$;

CREATE FUNCTION castle.revoke(token text) RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s CONSTANT castle.settings := castle_internal.current_settings();
    f castle_internal.found;
    revoked bigint[];
BEGIN
    PERFORM castle_internal.refuse_on_standby('revoke');
    f := castle_internal.find(token, s, false);
    IF f.id IS NULL THEN
        RETURN false;
    END IF;
    revoked := castle_internal.delete_family_of_session(f.id, NULL);
    PERFORM castle_internal.event(s, 'revoke', revoked);
    RETURN pg_catalog.cardinality(revoked) > 0;
END $$;

CREATE FUNCTION castle.revoke_session(session_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    revoked bigint[];
BEGIN
    PERFORM castle_internal.refuse_on_standby('revoke_session');
    revoked := castle_internal.delete_family_of_session(session_id, NULL);
    PERFORM castle_internal.event(castle_internal.current_settings(), 'revoke_session', revoked);
    RETURN pg_catalog.cardinality(revoked) > 0;
END $$;

CREATE FUNCTION castle.revoke_own_session(session_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    revoked bigint[];
BEGIN
    PERFORM castle_internal.refuse_on_standby('revoke_own_session');
    revoked := castle_internal.delete_family_of_session(session_id, castle_internal.logged_in_user());
    PERFORM castle_internal.event(castle_internal.current_settings(), 'revoke_session', revoked);
    RETURN pg_catalog.cardinality(revoked) > 0;
END $$;

-- revoke_all's work: every session of the user, but except_session's family,
-- whose tokens rotated away lose what is left of their grace.
CREATE FUNCTION castle_internal.revoke_all_of(user_id text, except_session bigint, event text) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    revoked bigint[];
BEGIN
    PERFORM castle_internal.refuse_on_standby('revoke_all');
    -- after any sign-in of the user in progress, so that it is revoked too
    PERFORM castle_internal.lock_user(user_id);
    PERFORM castle_internal.mark_user(user_id);
    revoked := ARRAY(SELECT castle_internal.delete_user_sessions(user_id, except_session));
    IF except_session IS NOT NULL THEN
        PERFORM castle_internal.end_graces(except_session, user_id);
    END IF;
    PERFORM castle_internal.event(castle_internal.current_settings(), event, revoked, user_id);
    RETURN pg_catalog.cardinality(revoked);
END $$;

CREATE FUNCTION castle.revoke_all(user_id text, except_session bigint DEFAULT NULL) RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
RETURN castle_internal.revoke_all_of(castle_internal.user_key(user_id), except_session, 'revoke_all');

CREATE FUNCTION castle.revoke_all(user_id bigint, except_session bigint DEFAULT NULL) RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
RETURN castle_internal.revoke_all_of(castle_internal.user_key(user_id::text), except_session, 'revoke_all');

CREATE FUNCTION castle.revoke_all(user_id uuid, except_session bigint DEFAULT NULL) RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
RETURN castle_internal.revoke_all_of(castle_internal.user_key(user_id::text), except_session, 'revoke_all');

CREATE FUNCTION castle.revoke_deleted_user(user_id text) RETURNS bigint
LANGUAGE sql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
RETURN castle_internal.revoke_all_of(castle_internal.user_key(user_id), NULL, 'trigger');

CREATE FUNCTION castle.revoke_other_sessions() RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
RETURN castle_internal.revoke_all_of(castle_internal.logged_in_user(), castle.session_id(), 'revoke_all');

CREATE FUNCTION castle.sessions_of(user_id text) RETURNS SETOF castle.session
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM castle_internal.live_sessions(castle_internal.user_key(user_id), (castle_internal.current_settings()).idle_timeout,
                                       pg_catalog.clock_timestamp())
$$;

CREATE FUNCTION castle.sessions_of(user_id bigint) RETURNS SETOF castle.session
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM castle.sessions_of(user_id::text)
$$;

CREATE FUNCTION castle.sessions_of(user_id uuid) RETURNS SETOF castle.session
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM castle.sessions_of(user_id::text)
$$;

CREATE FUNCTION castle.sessions_of() RETURNS SETOF castle.session
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM castle.sessions_of(castle_internal.logged_in_user())
$$;

-- ---------------------------------------------------------------------------
-- Rotation (the extension's families.rs and lifecycle.rs, rotate).

-- A family remembers every token it rotated away in the last hour, and
-- always its 8 newest; more than 60 rotations within an hour is a thief
-- flushing a copy out of that memory.
CREATE FUNCTION castle_internal.remember_rotations(family bigint, called_at timestamptz) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM castle_internal.forget_rotated(family, 8, called_at - interval '1 hour');
    RETURN castle_internal.recent_rotations(family, called_at - interval '1 hour') <= 60;
END $$;

CREATE FUNCTION castle_internal.minute_of(at timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT pg_catalog.floor(extract(epoch FROM at) / 60)::bigint - 15778080
$$;

-- The key for rotations in the minute of `rotated_at`: made (and the keys no
-- grace needs any more deleted) when `make`.
CREATE FUNCTION castle_internal.rotation_key(rotated_at timestamptz, grace integer, make boolean) RETURNS bytea
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    -- the extension's minute: since 2000-01-01, PostgreSQL's epoch
    minute CONSTANT bigint := castle_internal.minute_of(rotated_at);
    made bytea;
BEGIN
    SELECT k.key INTO made FROM castle.rotation_keys AS k WHERE k.epoch = minute;
    IF made IS NOT NULL OR NOT make THEN
        RETURN made;
    END IF;
    DELETE FROM castle.rotation_keys AS k
     WHERE k.epoch < castle_internal.minute_of(rotated_at - pg_catalog.make_interval(secs => grace));
    INSERT INTO castle.rotation_keys AS k (epoch, key) VALUES (minute, castle_internal.random_bytes(32))
    ON CONFLICT DO NOTHING RETURNING k.key INTO made;
    IF made IS NULL THEN
        -- another transaction made it meanwhile: a new statement sees it
        SELECT k.key INTO made FROM castle.rotation_keys AS k WHERE k.epoch = minute;
    END IF;
    RETURN made;
END $$;

-- The token the rotation of session `id` made, or that successor's newest
-- descendant: each step derived and proved against the stored hash. NULL
-- when the chain is broken.
CREATE FUNCTION castle_internal.follow_successors(s castle.settings, family bigint, id bigint, secret bytea,
                                         rotated_at timestamptz)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    key bytea;
    following record;
    next_secret text;
BEGIN
    FOR step IN 0..60 LOOP
        key := castle_internal.rotation_key(rotated_at, s.rotate_grace, false);
        IF key IS NULL THEN
            RETURN NULL;
        END IF;
        following := castle_internal.next_in_family(family, id);
        IF following.id IS NULL THEN
            RETURN NULL;
        END IF;
        next_secret := castle_internal.successor_secret(key, id, secret, s.secret_size);
        IF castle_internal.hash_secret(pg_catalog.convert_to(next_secret, 'UTF8')) <> following.hash THEN
            RETURN NULL;
        END IF;
        IF following.rotated_at IS NULL THEN
            RETURN castle_internal.encode_token(s.token_prefix, following.id, next_secret);
        END IF;
        id := following.id;
        secret := pg_catalog.convert_to(next_secret, 'UTF8');
        rotated_at := following.rotated_at;
    END LOOP;
    RETURN NULL;
END $$;

-- A reuse found once the user's lock is held (the token rotated by another
-- request meanwhile, or a family flushing its memory) is revoked after that
-- lock is let go: the block that took it is rolled back first, so that the
-- revocation's own transaction (dblink) does not wait for this one.
CREATE FUNCTION castle.rotate(token text, ttl interval DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s CONSTANT castle.settings := castle_internal.current_settings();
    f castle_internal.found;
    lifetime interval;
    expires timestamptz;
    rotated record;
    handed_back text;
    successor text;
    new_id bigint;
BEGIN
    PERFORM castle_internal.refuse_on_standby('rotate');
    f := castle_internal.find(token, s, false);
    IF f.id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_authorization_specification', MESSAGE = s.invalid_message;
    END IF;
    lifetime := castle_internal.checked_ttl(ttl);
    -- a rotation never extends a session's life
    expires := CASE WHEN lifetime IS NULL THEN f.expires_at
                    ELSE LEAST(f.expires_at, f.called_at + lifetime) END;
    BEGIN
        PERFORM castle_internal.lock_user(f.user_id);
        rotated := castle_internal.rotate_session(f.presented, f.called_at);
        IF rotated.family IS NULL THEN
            -- revoked by another transaction since we read it
            RAISE EXCEPTION USING ERRCODE = 'invalid_authorization_specification', MESSAGE = s.invalid_message;
        END IF;
        IF NOT rotated.live THEN
            -- rotated before this call: already when we read it, or by another
            -- request while we waited for the lock
            IF f.called_at >= rotated.rotated_at + pg_catalog.make_interval(secs => s.rotate_grace) THEN
                IF f.presented <> f.id THEN
                    RAISE EXCEPTION USING ERRCODE = 'CR001', MESSAGE = 'reuse';
                END IF;
                RAISE EXCEPTION USING ERRCODE = 'invalid_authorization_specification', MESSAGE = s.invalid_message;
            END IF;
            -- within the grace: the successor that rotation made, handed back
            handed_back := castle_internal.follow_successors(s, rotated.family, f.presented, f.secret, rotated.rotated_at);
            IF handed_back IS NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_authorization_specification', MESSAGE = s.invalid_message;
            END IF;
            RETURN handed_back;
        END IF;
        IF NOT castle_internal.remember_rotations(rotated.family, f.called_at) THEN
            RAISE LOG 'castle_sessions: family of session % rotated more than 60 times within an hour: taken for an attempt to flush a copy out of its memory, and revoked', rotated.family;
            RAISE EXCEPTION USING ERRCODE = 'CR001', MESSAGE = 'reuse';
        END IF;
        successor := castle_internal.successor_secret(castle_internal.rotation_key(rotated.rotated_at, s.rotate_grace, true),
                                             f.presented, f.secret, s.secret_size);
        new_id := castle_internal.insert_session(s, f.user_id, successor, f.called_at, expires, rotated.data, rotated.family);
    EXCEPTION WHEN SQLSTATE 'CR001' THEN
        PERFORM castle_internal.reuse(s, rotated.family, f.presented);
        RAISE EXCEPTION USING ERRCODE = 'invalid_authorization_specification', MESSAGE = s.invalid_message;
    END;
    PERFORM castle_internal.event(s, 'rotate', ARRAY[f.presented]);
    RETURN castle_internal.encode_token(s.token_prefix, new_id, successor);
END $$;

CREATE FUNCTION castle.rotate_or_null(token text, ttl interval DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN castle.rotate(token, ttl);
EXCEPTION WHEN invalid_authorization_specification THEN
    RETURN NULL;
END $$;

-- ---------------------------------------------------------------------------
-- Maintenance and the DBA's view.

CREATE FUNCTION castle.prune(batch_size integer DEFAULT 10000) RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s CONSTANT castle.settings := castle_internal.current_settings();
    pruned bigint[];
BEGIN
    PERFORM castle_internal.refuse_on_standby('prune');
    IF batch_size <= 0 THEN
        RAISE EXCEPTION 'batch_size must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    pruned := ARRAY(SELECT castle_internal.prune_sessions(batch_size, s.idle_timeout));
    PERFORM castle_internal.event(s, 'prune', pruned);
    RETURN pg_catalog.cardinality(pruned);
END $$;

-- The incident switch, with the caller's rights: only the owner (or a
-- superuser) can, and no application role can undo it.
CREATE FUNCTION castle.revoke_everything(issued_before timestamptz DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    revoked bigint;
BEGIN
    PERFORM castle_internal.refuse_on_standby('revoke_everything');
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'castle.revoke_everything must run at READ COMMITTED'
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = 'A snapshot taken before it waited for sign-ins in flight would miss their sessions.';
    END IF;
    LOCK TABLE castle.sessions IN SHARE ROW EXCLUSIVE MODE;
    revoked := castle_internal.revoke_everything_before(issued_before);
    -- nothing rotated before it derives a token after it
    DELETE FROM castle.rotation_keys;
    RAISE LOG 'castle_sessions: revoke_everything revoked % session(s)', revoked;
    IF (castle_internal.current_settings()).notify_revocations THEN
        PERFORM pg_catalog.pg_notify('castle_revocations',
            pg_catalog.jsonb_build_object('event', 'revoke_everything', 'count', revoked, 'all', true)::text);
    END IF;
    RETURN revoked;
END $$;

CREATE FUNCTION castle.overview() RETURNS TABLE (live_sessions bigint, users bigint, dead_sessions bigint,
                                                 rotated_sessions bigint, oldest_live timestamptz)
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM castle_internal.overview_of((castle_internal.current_settings()).idle_timeout)
$$;

-- No shared memory without the library: the counters are not collected, as
-- for the extension when it is not preloaded.
CREATE FUNCTION castle.stats_counters() RETURNS TABLE (datid oid, collecting boolean,
                                                       stats_reset timestamptz, counts bigint[])
LANGUAGE sql VOLATILE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT d.oid, false, NULL::timestamptz, NULL::bigint[]
      FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()
$$;

CREATE FUNCTION castle.stats_reset() RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- nothing is counted, so nothing is reset
END $$;

-- Routing helpers, as the extension has them: a router's shards must run the
-- extension (docs/sharding.md), but these read only what they are given.
CREATE FUNCTION castle.user_hash(user_id text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ('x' || pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(
               pg_catalog.convert_to(user_id, pg_catalog.getdatabaseencoding())), 'hex'), 8))::bit(32)::integer
$$;
CREATE FUNCTION castle.user_hash(user_id bigint) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
RETURN castle.user_hash(user_id::text);
CREATE FUNCTION castle.user_hash(user_id uuid) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
RETURN castle.user_hash(user_id::text);

CREATE FUNCTION castle.token_session_id(token text) RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (castle_internal.decode_token(token, (castle_internal.current_settings()).token_prefix)).session_id;
END $$;

-- ---------------------------------------------------------------------------
-- @SHARED sql/finalize.sql@

-- Privileges, as the extension's (sql/finalize.sql): nobody but the owner
-- reads or writes the tables; EXECUTE is granted by the DBA through the two
-- roles' functions.
REVOKE ALL ON TABLE castle.sessions, castle.user_locks, castle.rotation_keys, castle.settings,
    castle_internal.keys, castle_internal.autonomous FROM PUBLIC;
REVOKE ALL ON SCHEMA castle_internal FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA castle_internal FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA castle FROM PUBLIC;
GRANT USAGE ON SCHEMA castle TO PUBLIC;
GRANT EXECUTE ON FUNCTION castle.user_id(), castle.session_id(), castle.logout() TO PUBLIC;
GRANT EXECUTE ON FUNCTION castle.user_hash(bigint), castle.user_hash(uuid), castle.user_hash(text),
    castle.token_session_id(text) TO PUBLIC;
REVOKE ALL ON castle.stats FROM PUBLIC;
GRANT SELECT ON castle.stats TO pg_monitor;
GRANT EXECUTE ON FUNCTION castle.stats_counters(), castle.overview() TO pg_monitor;
COMMENT ON SCHEMA castle_internal IS 'castle_sessions (SQL edition): what castle''s functions are made of; the owner''s only';
COMMENT ON SCHEMA castle IS 'castle_sessions @VERSION@, the SQL edition (managed/castle_sessions.sql)';
