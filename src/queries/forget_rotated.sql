-- After a rotation in family $1: forget the tokens it rotated away beyond
-- its newest $2 that were rotated before $3, so that a session rotated every
-- few minutes for months keeps a few rows, not thousands, while a copy
-- rotated away lately stays a reuse however many rotations follow it. An
-- older token is then refused as unknown, without revoking the family.
DELETE FROM castle.sessions AS s
 WHERE s.id IN (SELECT k.id
                  FROM (SELECT r.id, r.rotated_at
                          FROM (SELECT f.id, f.rotated_at FROM castle.sessions AS f
                                 WHERE f.id = $1 AND f.rotated_at IS NOT NULL
                                UNION ALL
                                SELECT f.id, f.rotated_at FROM castle.sessions AS f
                                 WHERE f.family_id = $1 AND f.rotated_at IS NOT NULL) AS r
                         ORDER BY r.rotated_at DESC, r.id DESC
                        OFFSET $2) AS k
                 WHERE k.rotated_at < $3)
