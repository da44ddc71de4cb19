-- After a rotation in family $1: forget the tokens it rotated away beyond
-- its newest $2, so that a session rotated every few minutes for months
-- keeps a few rows, not thousands. An older token is then refused as
-- unknown, without revoking the family.
DELETE FROM castle.sessions AS s
 WHERE s.id IN (SELECT r.id
                  FROM (SELECT f.id, f.rotated_at FROM castle.sessions AS f
                         WHERE f.id = $1 AND f.rotated_at IS NOT NULL
                        UNION ALL
                        SELECT f.id, f.rotated_at FROM castle.sessions AS f
                         WHERE f.family_id = $1 AND f.rotated_at IS NOT NULL) AS r
                 ORDER BY r.rotated_at DESC, r.id DESC
                OFFSET $2)
