-- Record a use at $2, the time of the call. A session some other
-- transaction is writing right now is skipped rather than waited for.
UPDATE castle.sessions AS s
   SET used_at = $2, updated_at = $2
 WHERE s.id = (SELECT l.id FROM castle.sessions AS l WHERE l.id = $1 FOR NO KEY UPDATE SKIP LOCKED)
