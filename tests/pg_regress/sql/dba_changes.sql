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
-- The direct INSERT tests the extension's own CHECK on hash in Rust (its
-- regex costs half an INSERT), only while its expression is exactly this
-- version's: another rule under the same name is evaluated, and refuses
ALTER TABLE castle.sessions DROP CONSTRAINT sessions_hash_check;
ALTER TABLE castle.sessions ADD CONSTRAINT sessions_hash_check CHECK (hash ~ '^[0-9a-f]{63}$') NOT VALID;
SELECT refusal($$SELECT castle.create_session('other-rule')$$) AS other_rule_evaluated;
ALTER TABLE castle.sessions DROP CONSTRAINT sessions_hash_check;
ALTER TABLE castle.sessions ADD CONSTRAINT sessions_hash_check CHECK (hash ~ '^[0-9a-f]{64}$');
SELECT castle.create_session('own-rule') IS NOT NULL AS own_rule_passes;
-- the same rule on another column is a DBA's, and evaluated; so is a CHECK
-- sorted after the extension's
ALTER TABLE castle.sessions ADD CONSTRAINT a_user_is_hex CHECK (user_id ~ '^[0-9a-f]{64}$') NOT VALID;
SELECT refusal($$SELECT castle.create_session('alice')$$) AS same_rule_other_column;
ALTER TABLE castle.sessions DROP CONSTRAINT a_user_is_hex;
ALTER TABLE castle.sessions ADD CONSTRAINT zz_no_banned CHECK (user_id <> 'banned');
SELECT refusal($$SELECT castle.create_session('banned')$$) AS banned_after_own_check;
SELECT castle.create_session('not-banned') IS NOT NULL AS others_pass_after_own_check;
ALTER TABLE castle.sessions DROP CONSTRAINT zz_no_banned;
-- and the rule still holds for every other writer
SELECT split_part(refusal($$INSERT INTO castle.sessions (hash, user_id) VALUES (repeat('A', 64), 'upper')$$),
    ' DETAIL', 1) AS own_rule_for_sql;
-- The sign-in's direct INSERT evaluates a DBA's CHECK as an INSERT would,
-- tableoid included, and maintains a DBA's unique partial index, whose
-- violation is 23505 and writes nothing
ALTER TABLE castle.sessions ADD CONSTRAINT in_place CHECK (tableoid = 'castle.sessions'::regclass);
SELECT castle.create_session('in-place') IS NOT NULL AS created_with_tableoid_check;
ALTER TABLE castle.sessions DROP CONSTRAINT in_place;
-- a DBA's CHECK calls a function that names length() unqualified: it runs as
-- the owner under the pinned search_path, never the caller's, so a caller's
-- look-alike is never called
CREATE FUNCTION public.hash_is_long(text) RETURNS boolean LANGUAGE sql AS $$ SELECT length($1) = 64 $$;
ALTER TABLE castle.sessions ADD CONSTRAINT hash_is_long CHECK (public.hash_is_long(hash));
CREATE SCHEMA regress_shadow;
CREATE TABLE regress_shadow.calls (who text);
CREATE FUNCTION regress_shadow.length(text) RETURNS integer LANGUAGE sql
    AS $$ INSERT INTO regress_shadow.calls VALUES (current_user) RETURNING 64 $$;
SET search_path = regress_shadow, pg_catalog;
SELECT castle.create_session('shadowed') IS NOT NULL AS created_under_a_hostile_path;
RESET search_path;
SELECT count(*) AS look_alike_calls FROM regress_shadow.calls;
-- (the look-alike is live for the caller's own call of the same function)
SET search_path = regress_shadow, pg_catalog;
SELECT public.hash_is_long(repeat('a', 64)) AS callers_own_check;
RESET search_path;
SELECT count(*) AS look_alike_calls_by_the_caller FROM regress_shadow.calls;
ALTER TABLE castle.sessions DROP CONSTRAINT hash_is_long;
DROP SCHEMA regress_shadow CASCADE;
DROP FUNCTION public.hash_is_long(text);
CREATE UNIQUE INDEX one_solo_session ON castle.sessions (user_id) WHERE user_id LIKE 'solo%';
SELECT castle.create_session('solo') IS NOT NULL AS first_solo;
SELECT refusal($$SELECT castle.create_session('solo')$$) AS second_solo;
SELECT count(*) AS solo_rows FROM castle.sessions WHERE user_id = 'solo';
DROP INDEX castle.one_solo_session;
-- the new row is seen by the same statement's next call and the same
-- transaction's next statement, and is gone with a rollback
SELECT (castle.verify(castle.create_session('same-statement'))).user_id AS seen_in_statement;
BEGIN;
SELECT castle.create_session('rolled-back') AS rolled_back \gset
SELECT user_id AS seen_in_transaction FROM castle.authenticate(:'rolled_back');
ROLLBACK;
SELECT castle.is_valid(:'rolled_back') AS valid_after_rollback;
SELECT count(*) AS rows_after_rollback FROM castle.sessions WHERE user_id = 'rolled-back';
-- a column of another type: reads and writes go through SQL, which casts
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
-- Each change below once crashed a backend or broke max_sessions (issue 11).
-- After each, five sign-ins leave the user three sessions and the last token
-- verifies: every direct read checks what it relies on, or takes SQL.
CREATE FUNCTION public.after_ddl(who text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    token text;
BEGIN
    FOR i IN 1..5 LOOP
        token := castle.create_session(who);
    END LOOP;
    RETURN format('%s sessions, last token %s',
                  (SELECT count(*) FROM castle.sessions WHERE user_id = who),
                  CASE WHEN castle.is_valid(token) THEN 'verifies' ELSE 'refused' END);
END $$;
SELECT public.after_ddl('before-any-change');
-- the primary key on (user_id, id)
ALTER TABLE castle.sessions DROP CONSTRAINT sessions_pkey, ADD CONSTRAINT sessions_pkey PRIMARY KEY (user_id, id);
SELECT public.after_ddl('pk-on-two-columns');
ALTER TABLE castle.sessions DROP CONSTRAINT sessions_pkey, ADD CONSTRAINT sessions_pkey PRIMARY KEY (id);
-- the user index, same name, other columns
DROP INDEX castle.sessions_user_id_created_at_idx;
CREATE INDEX sessions_user_id_created_at_idx ON castle.sessions (created_at, user_id);
SELECT public.after_ddl('user-index-reordered');
DROP INDEX castle.sessions_user_id_created_at_idx;
CREATE INDEX sessions_user_id_created_at_idx ON castle.sessions (user_id, created_at);
-- the id looked up through a hash index only
ALTER TABLE castle.sessions DROP CONSTRAINT sessions_pkey;
CREATE INDEX sessions_id_hash ON castle.sessions USING hash (id);
SELECT public.after_ddl('id-by-hash-index');
DROP INDEX castle.sessions_id_hash;
ALTER TABLE castle.sessions ADD CONSTRAINT sessions_pkey PRIMARY KEY (id);
-- user_id in another collation (the index in ICU order)
ALTER TABLE castle.sessions ALTER COLUMN user_id TYPE text COLLATE "und-x-icu";
SELECT count(castle.create_session('u' || i)) FROM generate_series(1, 300) AS i;
SELECT public.after_ddl('icu-collation');
ALTER TABLE castle.sessions ALTER COLUMN user_id TYPE text COLLATE "C";
-- the table renamed and a copy put in its place
ALTER TABLE castle.sessions RENAME TO sessions_old;
CREATE TABLE castle.sessions (LIKE castle.sessions_old INCLUDING ALL);
SELECT public.after_ddl('replaced-table');
SELECT count(*) AS rows_in_old_table FROM castle.sessions_old WHERE user_id = 'replaced-table';
DROP TABLE castle.sessions;
ALTER TABLE castle.sessions_old RENAME TO sessions;
SELECT public.after_ddl('table-back');
-- a partial index, and a unique index on an expression of id
CREATE UNIQUE INDEX sessions_id_expr ON castle.sessions ((id + 0));
CREATE INDEX sessions_user_partial ON castle.sessions (user_id) WHERE user_id <> '';
SELECT public.after_ddl('odd-indexes');
DROP INDEX castle.sessions_id_expr, castle.sessions_user_partial;
-- a column default for data fills it, as an INSERT would
ALTER TABLE castle.sessions ALTER COLUMN data SET DEFAULT '{"source": "default"}';
SELECT data FROM castle.authenticate(castle.create_session('defaulted'));
ALTER TABLE castle.sessions ALTER COLUMN data DROP DEFAULT;
-- castle.session altered: authenticate, verify and login refuse to form a
-- row they would misread, in a Function Scan (which hands over the
-- descriptor it looked up) as in an expression (where it is looked up), and
-- form it again once the type is back (rolled back: a dropped attribute
-- would stay in the type)
SELECT castle.create_session('type-altered') AS typed_token \gset
BEGIN;
ALTER TYPE castle.session ADD ATTRIBUTE extra integer;
SAVEPOINT altered;
SELECT user_id FROM castle.authenticate(:'typed_token');
ROLLBACK TO altered;
SELECT (castle.verify(:'typed_token')).user_id;
ROLLBACK TO altered;
SELECT user_id FROM castle.login(:'typed_token');
ROLLBACK;
SELECT user_id FROM castle.authenticate(:'typed_token');
SELECT (castle.verify(:'typed_token')).user_id;
-- with ordinality, whose column the function's row does not have
SELECT s.user_id, s.n FROM castle.verify(:'typed_token') WITH ORDINALITY
    AS s(id, user_id, created_at, updated_at, expires_at, used_at, data, n);
DROP FUNCTION public.after_ddl(text);
DROP TABLE public.session_audit;
DROP FUNCTION public.audit_session();
REVOKE ALL ON SCHEMA castle FROM regress_castle_app;
REVOKE ALL ON FUNCTION castle.create_session(text, interval, jsonb), castle.authenticate(text) FROM regress_castle_app;
DROP ROLE regress_castle_app;
