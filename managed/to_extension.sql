-- Moves a database from castle_sessions' SQL edition to the extension, in
-- place and in one transaction, when you self-host (docs/managed.md):
--
--     psql -v ON_ERROR_STOP=1 -1 -f managed/to_extension.sql "$DATABASE_URL"
--
-- as a superuser, on a server where the castle_sessions package is installed
-- (and, as the extension recommends, preloaded). Every session and token
-- carries over (same table, same format); so do the rotation keys, the
-- settings (as ALTER DATABASE ... SET, the extension's way), the grants of
-- roles made with grant_request_role / grant_sign_in_role, and the row-level
-- security policies and revoke_sessions_trigger triggers that call castle.
-- Anything else outside castle that depends on the edition's objects stops
-- the move, named, before anything changes. Requests wait for its lock on
-- castle.sessions; run it when a few seconds of waiting are acceptable.
DO $move$
DECLARE
    edition CONSTANT oid[] := ARRAY(SELECT oid FROM pg_catalog.pg_namespace
                                     WHERE nspname IN ('castle', 'castle_internal'));
    blocking text;
    item record;
    setting record;
    defaults castle.settings;
    now_set castle.settings;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'castle_internal') THEN
        RAISE EXCEPTION 'this database has no castle_sessions SQL edition to move' USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_available_extensions WHERE name = 'castle_sessions') THEN
        RAISE EXCEPTION 'the castle_sessions extension is not installed on this server'
            USING ERRCODE = 'undefined_file', HINT = 'Install its package (or scripts/install.sh) first.';
    END IF;
    -- nobody signs in, out or rotates while the rows move
    LOCK TABLE castle.sessions, castle.rotation_keys IN EXCLUSIVE MODE;

    -- what outside the edition depends on it: policies and the trigger are
    -- carried over, anything else is named and stops the move
    CREATE TEMP TABLE castle_move_dependents ON COMMIT DROP AS
    SELECT DISTINCT d.classid, d.objid
      FROM pg_catalog.pg_depend AS d
     WHERE d.deptype = 'n'
       AND (  (d.refclassid = 'pg_catalog.pg_proc'::regclass
               AND d.refobjid IN (SELECT p.oid FROM pg_catalog.pg_proc AS p WHERE p.pronamespace = ANY (edition)))
           OR (d.refclassid = 'pg_catalog.pg_class'::regclass
               AND d.refobjid IN (SELECT c.oid FROM pg_catalog.pg_class AS c WHERE c.relnamespace = ANY (edition)))
           OR (d.refclassid = 'pg_catalog.pg_type'::regclass
               AND d.refobjid IN (SELECT t.oid FROM pg_catalog.pg_type AS t WHERE t.typnamespace = ANY (edition))))
       -- the schema the dependent object lives in, by its kind: only what
       -- lives outside the edition's two schemas is the application's
       AND COALESCE(CASE d.classid
               WHEN 'pg_catalog.pg_proc'::regclass THEN (SELECT p.pronamespace FROM pg_catalog.pg_proc AS p WHERE p.oid = d.objid)
               WHEN 'pg_catalog.pg_class'::regclass THEN (SELECT c.relnamespace FROM pg_catalog.pg_class AS c WHERE c.oid = d.objid)
               WHEN 'pg_catalog.pg_type'::regclass THEN (SELECT t.typnamespace FROM pg_catalog.pg_type AS t WHERE t.oid = d.objid)
               WHEN 'pg_catalog.pg_constraint'::regclass THEN (SELECT c.connamespace FROM pg_catalog.pg_constraint AS c WHERE c.oid = d.objid)
               WHEN 'pg_catalog.pg_rewrite'::regclass THEN (SELECT c.relnamespace FROM pg_catalog.pg_rewrite AS r
                                                              JOIN pg_catalog.pg_class AS c ON c.oid = r.ev_class WHERE r.oid = d.objid)
               WHEN 'pg_catalog.pg_attrdef'::regclass THEN (SELECT c.relnamespace FROM pg_catalog.pg_attrdef AS a
                                                              JOIN pg_catalog.pg_class AS c ON c.oid = a.adrelid WHERE a.oid = d.objid)
               WHEN 'pg_catalog.pg_trigger'::regclass THEN (SELECT c.relnamespace FROM pg_catalog.pg_trigger AS t
                                                              JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid WHERE t.oid = d.objid)
               WHEN 'pg_catalog.pg_policy'::regclass THEN (SELECT c.relnamespace FROM pg_catalog.pg_policy AS p
                                                             JOIN pg_catalog.pg_class AS c ON c.oid = p.polrelid WHERE p.oid = d.objid)
           END, 0) <> ALL (edition);
    SELECT pg_catalog.string_agg(pg_catalog.pg_describe_object(x.classid, x.objid, 0), '; ')
      INTO blocking
      FROM castle_move_dependents AS x
     WHERE x.classid NOT IN ('pg_catalog.pg_policy'::regclass, 'pg_catalog.pg_trigger'::regclass);
    IF blocking IS NOT NULL THEN
        RAISE EXCEPTION 'these objects depend on the SQL edition and cannot be carried over: %', blocking
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Drop them, run this again, and create them again after the move.';
    END IF;
    CREATE TEMP TABLE castle_move_recreate ON COMMIT DROP AS
    SELECT pg_catalog.format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s',
               p.polname, p.polrelid::regclass,
               CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
               CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                             WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
               (SELECT pg_catalog.string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE r::regrole::text END, ', ')
                  FROM pg_catalog.unnest(p.polroles) AS r),
               ' USING (' || pg_catalog.pg_get_expr(p.polqual, p.polrelid) || ')',
               ' WITH CHECK (' || pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) || ')') AS statement,
           pg_catalog.format('DROP POLICY %I ON %s', p.polname, p.polrelid::regclass) AS dropping
      FROM pg_catalog.pg_policy AS p
     WHERE p.oid IN (SELECT x.objid FROM castle_move_dependents AS x WHERE x.classid = 'pg_catalog.pg_policy'::regclass)
    UNION ALL
    SELECT pg_catalog.pg_get_triggerdef(t.oid),
           pg_catalog.format('DROP TRIGGER %I ON %s', t.tgname, t.tgrelid::regclass)
      FROM pg_catalog.pg_trigger AS t
     WHERE t.oid IN (SELECT x.objid FROM castle_move_dependents AS x WHERE x.classid = 'pg_catalog.pg_trigger'::regclass);
    FOR item IN SELECT * FROM castle_move_recreate LOOP
        EXECUTE item.dropping;
    END LOOP;

    -- the application roles, by what they may run
    CREATE TEMP TABLE castle_move_roles ON COMMIT DROP AS
    SELECT r.rolname,
           pg_catalog.has_function_privilege(r.oid, 'castle.create_session(text, interval, jsonb)', 'EXECUTE') AS signs_in
      FROM pg_catalog.pg_roles AS r
     WHERE NOT r.rolsuper AND r.rolname !~ '^pg_'
       AND r.oid <> (SELECT n.nspowner FROM pg_catalog.pg_namespace AS n WHERE n.nspname = 'castle')
       AND pg_catalog.has_function_privilege(r.oid, 'castle.authenticate(text)', 'EXECUTE');

    ALTER SCHEMA castle RENAME TO castle_sql_edition;
    CREATE EXTENSION castle_sessions;
    INSERT INTO castle.sessions (id, hash, user_id, created_at, updated_at, expires_at, used_at, data, family_id, rotated_at)
    SELECT id, hash, user_id, created_at, updated_at, expires_at, used_at, data, family_id, rotated_at
      FROM castle_sql_edition.sessions;
    INSERT INTO castle.rotation_keys (epoch, key) SELECT epoch, key FROM castle_sql_edition.rotation_keys;
    PERFORM pg_catalog.setval(pg_catalog.pg_get_serial_sequence('castle.sessions', 'id'),
        GREATEST((SELECT s.last_value FROM castle_sql_edition.sessions_id_seq AS s),
                 (SELECT pg_catalog.max(s.id) FROM castle.sessions AS s), 1));

    -- settings that differ from the defaults become the database's
    SELECT * INTO now_set FROM castle_sql_edition.settings;
    defaults := ROW(true, 3, 'oat_', 64, 'Not a valid session', 0, 60, 0, 10, false, false)::castle_sql_edition.settings;
    FOR setting IN
        SELECT c.key, c.value FROM pg_catalog.jsonb_each_text(pg_catalog.to_jsonb(now_set)) AS c
          JOIN pg_catalog.jsonb_each_text(pg_catalog.to_jsonb(defaults)) AS d USING (key)
         WHERE c.value IS DISTINCT FROM d.value AND c.key <> 'one_row'
    LOOP
        EXECUTE pg_catalog.format('ALTER DATABASE %I SET castle.%s = %L',
            pg_catalog.current_database(), setting.key, setting.value);
    END LOOP;

    FOR item IN SELECT * FROM castle_move_roles LOOP
        IF item.signs_in THEN
            PERFORM castle.grant_sign_in_role(item.rolname::regrole);
        ELSE
            PERFORM castle.grant_request_role(item.rolname::regrole);
        END IF;
    END LOOP;
    DROP SCHEMA castle_sql_edition CASCADE;
    DROP SCHEMA castle_internal CASCADE;
    -- the policies and triggers, now calling the extension's castle
    FOR item IN SELECT * FROM castle_move_recreate LOOP
        EXECUTE item.statement;
    END LOOP;
    RAISE NOTICE 'castle_sessions: moved to the extension (% sessions); settings are now ALTER DATABASE settings, read by new connections',
        (SELECT pg_catalog.count(*) FROM castle.sessions);
END $move$;
