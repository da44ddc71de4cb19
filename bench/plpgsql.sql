-- What users compare castle_sessions to: the same API written by hand in
-- PL/pgSQL with pgcrypto, against the same table and the same token format, so
-- each implementation accepts the other's tokens (bench/check.sql proves it).
--
-- It keeps the extension's logic and security model: the castle.* settings are
-- honoured, the checksum is checked before any table access, trimming deletes
-- dead sessions first and then the oldest, logins of one user are serialized
-- with an advisory lock, and the public functions are SECURITY DEFINER with a
-- pinned search_path. Simplifications, each in PL/pgSQL's favour:
--   * the random part is taken to be 64 characters (castle.secret_size's
--     default) instead of trying every split of the checksum;
--   * base64 is not checked for canonical form, and hashes are compared with
--     plain = (not in constant time);
--   * a touch waits for a concurrent writer of the row instead of skipping it.
-- With bench_plpgsql.skip_checksum = on, verify also skips the checksum, as a
-- hand-written version might (the hash comparison refuses forgeries anyway):
-- run.sh measures that variant too, since CRC-32 in PL/pgSQL is costly.

CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA public;
CREATE SCHEMA bench_plpgsql;

-- pgcrypto has no CRC-32: zlib's (CRC-32/ISO-HDLC), table-driven. The table is
-- computed once here and written into the function as a constant.
DO $do$
DECLARE
    crc_table bigint[] := '{}';
    c bigint;
BEGIN
    FOR n IN 0..255 LOOP
        c := n;
        FOR k IN 1..8 LOOP
            c := CASE WHEN c & 1 = 1 THEN (c >> 1) # 3988292384 ELSE c >> 1 END;  -- 0xEDB88320
        END LOOP;
        crc_table := crc_table || c;
    END LOOP;
    EXECUTE format($f$
        CREATE FUNCTION bench_plpgsql.crc32(data text) RETURNS bigint
        LANGUAGE plpgsql IMMUTABLE STRICT AS $body$
        DECLARE
            crc_table CONSTANT bigint[] := %L;
            bytes CONSTANT bytea := pg_catalog.convert_to(data, 'UTF8');
            c bigint := 4294967295;
        BEGIN
            FOR i IN 0 .. pg_catalog.length(bytes) - 1 LOOP
                c := crc_table[((c # pg_catalog.get_byte(bytes, i)) & 255) + 1] # (c >> 8);
            END LOOP;
            RETURN c # 4294967295;
        END $body$ $f$, crc_table);
END $do$;

-- Unpadded base64url. encode() breaks lines every 76 characters: drop them too.
CREATE FUNCTION bench_plpgsql.b64url_encode(data text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
RETURN pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(data, 'UTF8'), 'base64'), E'+/=\n', '-_');

-- The caller checks the alphabet and length first, so decode() cannot fail;
-- 'escape' turns any non-ASCII byte into a backslash sequence, which the
-- caller's patterns then refuse, instead of raising an encoding error.
CREATE FUNCTION bench_plpgsql.b64url_decode(data text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
RETURN pg_catalog.encode(pg_catalog.decode(
    pg_catalog.translate(data, '-_', '+/') || pg_catalog.repeat('=', (4 - pg_catalog.length(data) % 4) % 4),
    'base64'), 'escape');

-- The session a token names, or NULL for any bad token (castle.verify).
CREATE FUNCTION bench_plpgsql.verify(token text) RETURNS castle.session
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    prefix CONSTANT text := coalesce(current_setting('castle.token_prefix', true), 'oat_');
    touch CONSTANT interval := coalesce(current_setting('castle.touch_interval', true), '60s')::interval;
    idle CONSTANT interval := coalesce(current_setting('castle.idle_timeout', true), '0')::interval;
    id_part text;
    secret_part text;
    digits text;
    secret text;
    s castle.sessions;
BEGIN
    IF token IS NULL OR left(token, length(prefix)) <> prefix THEN
        RETURN NULL;
    END IF;
    id_part := split_part(substr(token, length(prefix) + 1), '.', 1);
    secret_part := split_part(substr(token, length(prefix) + 1), '.', 2);
    IF id_part !~ '^[A-Za-z0-9_-]{2,26}$' OR length(id_part) % 4 = 1
       OR secret_part !~ '^[A-Za-z0-9_-]{88,100}$' OR length(secret_part) % 4 = 1 THEN
        RETURN NULL;
    END IF;
    digits := bench_plpgsql.b64url_decode(id_part);
    secret := bench_plpgsql.b64url_decode(secret_part);
    IF digits !~ '^[1-9][0-9]{0,17}$'                   -- fits a bigint without a range check
       OR secret !~ '^[A-Za-z0-9_-]{64}[1-9][0-9]{0,9}$' THEN
        RETURN NULL;
    END IF;
    -- forged tokens stop here, before any table access
    IF current_setting('bench_plpgsql.skip_checksum', true) IS DISTINCT FROM 'on'
       AND bench_plpgsql.crc32(left(secret, 64))::text <> substr(secret, 65) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO s FROM castle.sessions WHERE id = digits::bigint;
    IF NOT FOUND OR s.hash <> encode(public.digest(secret, 'sha256'), 'hex') THEN
        RETURN NULL;
    END IF;
    IF (s.expires_at IS NOT NULL AND s.expires_at <= now())
       OR (idle > '0' AND coalesce(s.used_at, s.created_at) <= now() - idle) THEN
        RETURN NULL;
    END IF;
    IF touch >= '0' AND (s.used_at IS NULL OR s.used_at <= now() - touch) THEN
        UPDATE castle.sessions SET used_at = now(), updated_at = now() WHERE id = s.id RETURNING * INTO s;
    END IF;
    RETURN ROW(s.id, s.user_id, s.created_at, s.updated_at, s.expires_at, s.used_at, s.data)::castle.session;
END $$;

-- The same, raising 28000 for any bad token (castle.authenticate).
CREATE FUNCTION bench_plpgsql.authenticate(token text) RETURNS castle.session
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s castle.session := bench_plpgsql.verify(token);
BEGIN
    IF s.id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_authorization_specification',
            MESSAGE = coalesce(current_setting('castle.invalid_message', true), 'Not a valid session');
    END IF;
    RETURN s;
END $$;

-- A new session for user_id, trimmed to castle.max_sessions; returns its token.
CREATE FUNCTION bench_plpgsql.create_session(user_id text, ttl interval DEFAULT NULL, data jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    prefix CONSTANT text := coalesce(current_setting('castle.token_prefix', true), 'oat_');
    max_sessions CONSTANT int := coalesce(current_setting('castle.max_sessions', true), '3')::int;
    idle CONSTANT interval := coalesce(current_setting('castle.idle_timeout', true), '0')::interval;
    default_ttl CONSTANT interval := coalesce(current_setting('castle.default_ttl', true), '0')::interval;
    random text;
    secret text;
    new_id bigint;
BEGIN
    IF coalesce(user_id, '') = '' THEN
        RAISE EXCEPTION 'user_id must not be NULL or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ttl <= '0' THEN
        RAISE EXCEPTION 'ttl must be a positive interval' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- 48 random bytes are exactly 64 base64 characters of 6 uniform bits each
    random := translate(encode(public.gen_random_bytes(48), 'base64'), '+/', '-_');
    secret := random || bench_plpgsql.crc32(random);
    PERFORM pg_advisory_xact_lock(1667330932, hashtext(create_session.user_id));
    INSERT INTO castle.sessions (hash, user_id, expires_at, data)
    VALUES (encode(public.digest(secret, 'sha256'), 'hex'), create_session.user_id,
            now() + coalesce(ttl, nullif(default_ttl, '0')), create_session.data)
    RETURNING id INTO new_id;
    -- dead sessions first, then the oldest, until max_sessions remain
    DELETE FROM castle.sessions AS s
     USING (SELECT o.id, o.dead,
                   row_number() OVER (ORDER BY o.dead, o.created_at DESC, o.id DESC) AS keep_rank
              FROM (SELECT l.id, l.created_at,
                           (l.expires_at IS NOT NULL AND l.expires_at <= now())
                           OR (idle > '0' AND coalesce(l.used_at, l.created_at) <= now() - idle) AS dead
                      FROM castle.sessions AS l
                     WHERE l.user_id = create_session.user_id AND l.id <> new_id) AS o) AS r
     WHERE s.id = r.id AND (r.dead OR (max_sessions > 0 AND r.keep_rank >= max_sessions));
    RETURN prefix || bench_plpgsql.b64url_encode(new_id::text) || '.' || bench_plpgsql.b64url_encode(secret);
END $$;
