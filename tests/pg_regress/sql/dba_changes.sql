-- A DBA may add to castle.sessions: a trigger, a column, a CHECK, NOT NULL.
-- create_session writes the row itself only while the table is as the
-- extension made it; otherwise it inserts with SQL, so triggers fire and
-- defaults fill. Either way constraints hold, and a failed one says which,
-- with no detail (the detail of a failed row would show its hash).
CREATE ROLE regress_castle_app;
GRANT USAGE ON SCHEMA castle TO regress_castle_app;
GRANT EXECUTE ON FUNCTION castle.create_session(text, interval, jsonb),
                          castle.authenticate(text) TO regress_castle_app;
-- an audit trigger fires for the insert, and for the trimming's delete
CREATE TABLE public.session_audit (op text, session_id bigint, user_id text);
CREATE FUNCTION public.audit_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO public.session_audit VALUES (TG_OP, NEW.id, NEW.user_id);
    ELSE
        INSERT INTO public.session_audit VALUES (TG_OP, OLD.id, OLD.user_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER audit AFTER INSERT OR DELETE ON castle.sessions
    FOR EACH ROW EXECUTE FUNCTION public.audit_session();
SET ROLE regress_castle_app;
SELECT castle.create_session('audited') AS audited \gset
SELECT id AS audited_id, user_id AS audited_user FROM castle.authenticate(:'audited') \gset
SELECT :'audited_user' AS audited_user;
SELECT count(castle.create_session('audited')) FROM generate_series(1, 3);
RESET ROLE;
SELECT a.op, a.user_id, count(*) FROM public.session_audit AS a GROUP BY 1, 2 ORDER BY 1;
SELECT a.session_id = :audited_id AS oldest_trimmed, (castle.verify(:'audited')).id IS NULL AS its_token_refused
  FROM public.session_audit AS a WHERE a.op = 'DELETE';
SELECT count(*) AS audited_sessions FROM castle.sessions WHERE user_id = 'audited';
-- with the trigger, a CHECK is evaluated by SQL, as the owner: still no detail
ALTER TABLE castle.sessions ADD CONSTRAINT no_banned CHECK (user_id <> 'banned');
SELECT refusal($$SELECT castle.create_session('banned')$$) AS banned_with_trigger;
ALTER TABLE castle.sessions DROP CONSTRAINT no_banned;
DROP TRIGGER audit ON castle.sessions;
SELECT castle.create_session('unaudited') IS NOT NULL AS created;
SELECT count(*) AS audited_rows FROM public.session_audit;
-- an added column with a default is filled; once dropped, the fast path is back
ALTER TABLE castle.sessions ADD COLUMN origin text NOT NULL DEFAULT 'castle';
SET ROLE regress_castle_app;
SELECT castle.create_session('with-origin') AS with_origin \gset
RESET ROLE;
SELECT user_id, origin FROM castle.sessions WHERE id = (castle.verify(:'with_origin')).id;
ALTER TABLE castle.sessions DROP COLUMN origin;
SELECT castle.create_session('after-drop') AS after_drop \gset
SELECT user_id FROM castle.authenticate(:'after_drop');
-- a CHECK is evaluated; the failure names it, shows no row, and writes nothing
ALTER TABLE castle.sessions ADD CONSTRAINT no_banned CHECK (user_id <> 'banned');
SET ROLE regress_castle_app;
SELECT refusal($$SELECT castle.create_session('banned')$$) AS banned_as_app;
RESET ROLE;
SELECT refusal($$SELECT castle.create_session('banned')$$) AS banned_as_superuser;
SELECT count(*) AS banned_rows FROM castle.sessions WHERE user_id = 'banned';
SELECT castle.create_session('allowed') IS NOT NULL AS others_still_sign_in;
ALTER TABLE castle.sessions DROP CONSTRAINT no_banned;
-- without any CHECK at all
ALTER TABLE castle.sessions DROP CONSTRAINT sessions_hash_check;
SELECT castle.create_session('unchecked') IS NOT NULL AS created_without_checks;
ALTER TABLE castle.sessions ADD CONSTRAINT sessions_hash_check CHECK (hash ~ '^[0-9a-f]{64}$');
-- a column of another type stops every direct read and write, with a clear error
SELECT castle.create_session('retyped') AS retyped \gset
ALTER TABLE castle.sessions ALTER COLUMN data TYPE json USING data::json;
SELECT refusal($$SELECT castle.create_session('retyped')$$) AS create_on_retyped_table;
SELECT refusal(format('SELECT castle.verify(%L)', :'retyped')) AS verify_on_retyped_table;
ALTER TABLE castle.sessions ALTER COLUMN data TYPE jsonb USING data::jsonb;
SELECT user_id FROM castle.authenticate(:'retyped');
-- NOT NULL on a column create_session may leave NULL (expires_at, without a ttl)
BEGIN;
UPDATE castle.sessions SET expires_at = now() + interval '1 day' WHERE expires_at IS NULL;
ALTER TABLE castle.sessions ALTER COLUMN expires_at SET NOT NULL;
SELECT refusal($$SELECT castle.create_session('no-ttl')$$) AS without_ttl;
SELECT castle.create_session('with-ttl', '1 hour') IS NOT NULL AS with_ttl_created;
ROLLBACK;
-- a read-only transaction is refused before anything is written
BEGIN READ ONLY;
SELECT refusal($$SELECT castle.create_session('read-only')$$) AS read_only;
ROLLBACK;
DROP TABLE public.session_audit;
DROP FUNCTION public.audit_session();
REVOKE ALL ON SCHEMA castle FROM regress_castle_app;
REVOKE ALL ON FUNCTION castle.create_session(text, interval, jsonb), castle.authenticate(text) FROM regress_castle_app;
DROP ROLE regress_castle_app;
