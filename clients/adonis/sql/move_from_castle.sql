-- Moves the sessions of an app that used the original castle package (the
-- seed's `sessions` table: id, hash, user_id, created_at, updated_at,
-- expires_at, used_at) into castle.sessions, keeping ids and hashes, so every
-- token the original issued keeps authenticating and nobody is signed out.
--
--   psql -v ON_ERROR_STOP=1 -v source=public.sessions -d app -f move_from_castle.sql
--
-- Run it as the owner of castle_sessions (or a superuser), once, in the
-- deploy that switches the app to castle-sessions-adonis: after the old code
-- stops serving (it would refuse every token once its table is empty) and
-- before the new code starts (docs/adonis.md).
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

-- the original's time columns may be NULL: castle's created_at may not
INSERT INTO castle.sessions (id, hash, user_id, created_at, updated_at, expires_at, used_at)
SELECT s.id, s.hash, s.user_id::text,
       coalesce(s.created_at, s.updated_at, pg_catalog.now()),
       coalesce(s.updated_at, s.created_at, pg_catalog.now()),
       s.expires_at, s.used_at
  FROM :source AS s
 ORDER BY s.id;

SELECT pg_catalog.count(*) AS moved FROM :source \gset
DELETE FROM :source;

-- castle's next id: past the old table's ids and past what its sequence
-- issued (read directly, so that missing rights on it are an error, not a
-- silent NULL)
SELECT pg_catalog.pg_get_serial_sequence(:'source', 'id') AS old_sequence,
       pg_catalog.pg_get_serial_sequence('castle.sessions', 'id') AS castle_sequence \gset
\if :{?old_sequence}
SELECT last_value AS old_last FROM :old_sequence \gset
\else
\set old_last 0
\endif
SELECT pg_catalog.setval(:'castle_sequence',
       GREATEST((SELECT pg_catalog.max(id) FROM castle.sessions), :old_last,
                (SELECT last_value FROM :castle_sequence), 1)) AS next_above \gset
COMMIT;
\echo moved :moved sessions from :source into castle.sessions; new session ids start above :next_above
