-- The SQL surface: every function with its signature, volatility, strictness,
-- parallel safety, security and pinned settings. A change here is an API change.
SELECT p.proname,
       pg_get_function_identity_arguments(p.oid) AS args,
       pg_get_function_result(p.oid) AS returns,
       p.provolatile AS vol, p.proisstrict AS strict, p.proparallel AS par,
       p.prosecdef AS secdef, p.proconfig AS config
  FROM pg_proc p
 WHERE p.pronamespace = 'castle'::regnamespace
 ORDER BY 1, 2;
-- Nobody but the owner may touch the table, or run anything but the auth-context
-- accessors, until granted.
SELECT has_table_privilege('public', 'castle.sessions', 'SELECT') AS public_reads_sessions,
       has_table_privilege('public', 'castle.sessions', 'INSERT') AS public_writes_sessions,
       string_agg(p.proname, ', ' ORDER BY p.proname)
           FILTER (WHERE has_function_privilege('public', p.oid, 'EXECUTE')) AS public_executes
  FROM pg_proc p WHERE p.pronamespace = 'castle'::regnamespace;
\d castle.sessions
\d castle.session
