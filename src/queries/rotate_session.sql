-- Rotate session $1 away at time $2: the row stays, marked, for its grace
-- and then for reuse detection. A session rotated before keeps its first
-- rotated_at. Returns what the successor carries over: the data and the
-- family; when the session was rotated; and whether this statement rotated
-- it (read from the row it locked, not inferred from the times).
WITH before AS (
    SELECT s.id, s.rotated_at IS NULL AS live
      FROM castle.sessions AS s
     WHERE s.id = $1
       FOR UPDATE
)
UPDATE castle.sessions AS s
   SET rotated_at = COALESCE(s.rotated_at, $2),
       updated_at = GREATEST(s.updated_at, $2)
  FROM before AS b
 WHERE s.id = b.id
RETURNING s.data, COALESCE(s.family_id, s.id), s.rotated_at, b.live
