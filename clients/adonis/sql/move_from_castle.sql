-- Moves the sessions of an app that used the original castle package (the
-- seed's `sessions` table: id, hash, user_id, created_at, updated_at,
-- expires_at, used_at) into castle.sessions, keeping ids and hashes, so every
-- token the original issued keeps authenticating and nobody is signed out.
--
--   psql -v ON_ERROR_STOP=1 -v source=public.sessions -d app -f move_from_castle.sql
--
-- Run it as the owner of castle_sessions (or a superuser), once, in the
-- deploy that switches the app to castle-sessions-adonis: after the old code
-- stops signing users in and before the new code does (docs/adonis.md).
-- One transaction: it moves every row or none. It locks the old table, moves
-- its rows (a hash castle.sessions cannot hold, or an id it already has, is an
-- error that moves nothing), empties it (the hashes of live tokens should not
-- stay in two places), and moves castle's id sequence past every id the old
-- table used or could have issued, so no new token can ever reuse an id.
-- Run again, it moves what is left (nothing, usually).
\set ON_ERROR_STOP on
\if :{?source}
\else
\set source public.sessions
\endif

BEGIN;
-- no row may be added by the old app while this runs
LOCK TABLE :source IN EXCLUSIVE MODE;

INSERT INTO castle.sessions (id, hash, user_id, created_at, updated_at, expires_at, used_at)
SELECT s.id, s.hash, s.user_id::text, s.created_at, coalesce(s.updated_at, s.created_at),
       s.expires_at, s.used_at
  FROM :source AS s
 ORDER BY s.id;

SELECT pg_catalog.count(*) AS moved FROM :source \gset
DELETE FROM :source;

-- castle's next id: past the old table's ids and past its own sequence
SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('castle.sessions', 'id'),
       GREATEST(
           (SELECT pg_catalog.max(id) FROM castle.sessions),
           (SELECT s.last_value FROM pg_catalog.pg_sequences AS s
             WHERE pg_catalog.format('%I.%I', s.schemaname, s.sequencename)::regclass
                 = pg_catalog.pg_get_serial_sequence(:'source', 'id')::regclass),
           (SELECT s.last_value FROM pg_catalog.pg_sequences AS s
             WHERE pg_catalog.format('%I.%I', s.schemaname, s.sequencename)::regclass
                 = pg_catalog.pg_get_serial_sequence('castle.sessions', 'id')::regclass),
           1))
  \gset castle_
COMMIT;
\echo moved :moved sessions from :source into castle.sessions; the next session id is above :castle_setval
