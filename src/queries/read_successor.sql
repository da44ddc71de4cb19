-- The newest session of family $1 that was not rotated away: what a token
-- rotated away from the family stands for within castle.rotate_grace. Every
-- successor carries its family's id; the family's first session never does.
SELECT s.id
  FROM castle.sessions AS s
 WHERE s.family_id = $1 AND s.rotated_at IS NULL
 ORDER BY s.id DESC
 LIMIT 1
