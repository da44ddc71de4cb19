-- Rotate session $1 away at time $2: the row stays, marked, for its grace
-- and then for reuse detection. A session rotated before keeps its first
-- rotated_at. Returns what the successor carries over: the data and the
-- family, and when the session was rotated.
UPDATE castle.sessions AS s
   SET rotated_at = COALESCE(s.rotated_at, $2),
       updated_at = GREATEST(s.updated_at, $2)
 WHERE s.id = $1
RETURNING s.data, COALESCE(s.family_id, s.id), s.rotated_at
