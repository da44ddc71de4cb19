-- Serialize session creation per user until the transaction ends, so that
-- concurrent logins of one user cannot both see room under max_sessions.
SELECT pg_catalog.pg_advisory_xact_lock($1, $2)
