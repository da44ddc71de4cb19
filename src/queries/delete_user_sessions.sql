-- Sign out everywhere ($2 NULL), or everywhere but session $2's family.
DELETE FROM castle.sessions AS s
 WHERE s.user_id = $1
   AND ($2 IS NULL
        OR COALESCE(s.family_id, s.id) IS DISTINCT FROM
           (SELECT COALESCE(k.family_id, k.id) FROM castle.sessions AS k WHERE k.id = $2))
RETURNING s.id
