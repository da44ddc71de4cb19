-- Record a use. A session some other transaction is writing right now is
-- skipped rather than waited for: its used_at is being written anyway.
UPDATE castle.sessions AS s
   SET used_at = pg_catalog.now(), updated_at = pg_catalog.now()
 WHERE s.id = (SELECT l.id FROM castle.sessions AS l WHERE l.id = $1 FOR NO KEY UPDATE SKIP LOCKED)
