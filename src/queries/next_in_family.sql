-- The session a rotation made from session $2 of family $1: the family's
-- next, since a family grows only by rotating its newest session (rotating
-- a token again within its grace hands back that same successor). Its hash
-- proves it (families::follow_successors), and when it was rotated on, if
-- it was.
SELECT s.id, s.hash, s.rotated_at
  FROM castle.sessions AS s
 WHERE s.family_id = $1 AND s.id > $2
 ORDER BY s.id
 LIMIT 1
