-- Sign out one device: the whole family of session $1 (its sign-in's first
-- session and every successor, rotated away or not), if $1 belongs to user
-- $2, whose lock the caller holds.
WITH target AS (
    SELECT COALESCE(s.family_id, s.id) AS family
      FROM castle.sessions AS s
     WHERE s.id = $1 AND s.user_id = $2
), doomed AS (
    SELECT s.id FROM castle.sessions AS s JOIN target AS t ON s.id = t.family
    UNION ALL
    SELECT s.id FROM castle.sessions AS s JOIN target AS t ON s.family_id = t.family
)
DELETE FROM castle.sessions AS s
 USING doomed AS d
 WHERE s.id = d.id
RETURNING s.id
