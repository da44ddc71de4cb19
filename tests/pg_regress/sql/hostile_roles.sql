-- A role that can create objects in public and pg_temp shadows what the
-- extension uses (now(), =, a sessions table, the session type) and puts its
-- own schemas first on search_path: it gains nothing and changes no result.
CREATE ROLE regress_castle_mallory NOLOGIN;
GRANT USAGE ON SCHEMA castle TO regress_castle_mallory;
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA castle TO regress_castle_mallory;
GRANT CREATE ON SCHEMA public TO regress_castle_mallory;
SELECT castle.create_session('victim', '1 hour') AS victim \gset
SELECT castle.create_session('expired', '1 hour') AS expired \gset
SELECT (castle.verify(:'expired')).id AS expired_id \gset
UPDATE castle.sessions SET expires_at = now() - interval '1 hour' WHERE id = :expired_id;
-- a fresh backend, so that every statement the extension keeps is first prepared under mallory's path
\c
SET ROLE regress_castle_mallory;
-- a clock stuck in the past, equality that always holds, look-alike tables and types
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2000-01-01'::timestamptz $$;
CREATE FUNCTION public.always(bigint, bigint) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.always);
CREATE FUNCTION public.always_text(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.always_text);
CREATE FUNCTION public.never(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE OPERATOR public.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.never);
CREATE TABLE public.sessions (id bigint, hash text, user_id text);
CREATE TEMP TABLE sessions (id bigint, hash text, user_id text);
CREATE FUNCTION public.pg_advisory_xact_lock(integer, integer) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SET search_path = public, pg_temp, pg_catalog;
-- the shadows are live for mallory's own queries ...
SELECT 1::bigint = 2::bigint AS shadow_equality, now() = '2000-01-01' AS shadow_clock;
-- ... and change nothing inside the extension
SELECT user_id FROM castle.authenticate(:'victim');
SELECT refusal(format('SELECT castle.authenticate(%L)', :'expired')) AS expired_still_refused;
SELECT refusal(format('SELECT castle.authenticate(%L)', 'oat_' || split_part(substr(:'victim', 5), '.', 1) || '.' || split_part(:'expired', '.', 2))) AS wrong_secret_still_refused;
SELECT count(castle.create_session('mallory-target')) FROM generate_series(1, 5);
SELECT castle.revoke('oat_MQ.eA') AS garbage_revokes_nothing;
RESET search_path;
-- the privileges model: functions yes, the table no
SELECT refusal($$SELECT hash FROM castle.sessions LIMIT 1$$) AS read_hashes;
SELECT refusal($$INSERT INTO castle.sessions (hash, user_id) VALUES (repeat('a', 64), 'x')$$) AS insert_row;
SELECT refusal($$UPDATE castle.sessions SET expires_at = NULL$$) AS extend_sessions;
SELECT refusal($$DELETE FROM castle.sessions$$) AS delete_rows;
RESET ROLE;
SELECT count(*) AS mallory_target_sessions FROM castle.sessions WHERE user_id = 'mallory-target';
SELECT count(*) AS rows_in_the_lookalike FROM public.sessions;
-- a role without a grant cannot even call the functions
CREATE ROLE regress_castle_nobody NOLOGIN;
SET ROLE regress_castle_nobody;
SELECT refusal($$SELECT castle.create_session('x')$$) AS ungranted_create;
SELECT castle.user_id() IS NULL AS accessors_are_public;
RESET ROLE;
DROP ROLE regress_castle_nobody;
DROP TABLE public.sessions, pg_temp.sessions;
DROP OPERATOR public.= (bigint, bigint);
DROP OPERATOR public.= (text, text);
DROP OPERATOR public.<= (timestamptz, timestamptz);
DROP FUNCTION public.now(), public.always(bigint, bigint), public.always_text(text, text),
    public.never(timestamptz, timestamptz), public.pg_advisory_xact_lock(integer, integer);
REVOKE ALL ON ALL ROUTINES IN SCHEMA castle FROM regress_castle_mallory;
REVOKE USAGE ON SCHEMA castle FROM regress_castle_mallory;
REVOKE CREATE ON SCHEMA public FROM regress_castle_mallory;
DROP ROLE regress_castle_mallory;
