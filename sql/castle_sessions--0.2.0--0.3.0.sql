-- castle_sessions 0.2.0 -> 0.3.0: create_session runs as its caller. A sign-in
-- now runs no SQL in the common case (the census and the insert go through
-- the table and index access methods), so the function no longer pays for
-- SECURITY DEFINER and SET search_path on every call; what SQL it still runs
-- (trimming, or the insert into a table a DBA gave a trigger) runs as the
-- table's owner under a pinned search_path. Sessions and tokens are untouched.
\echo Use "ALTER EXTENSION castle_sessions UPDATE TO '0.3.0'" to load this file. \quit

ALTER FUNCTION castle.create_session(bigint, interval, jsonb) SECURITY INVOKER RESET search_path;
ALTER FUNCTION castle.create_session(uuid, interval, jsonb) SECURITY INVOKER RESET search_path;
ALTER FUNCTION castle.create_session(text, interval, jsonb) SECURITY INVOKER RESET search_path;
