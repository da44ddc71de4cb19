-- After a new session ($2) for user $1: delete the user's expired sessions,
-- then the oldest live ones, so that the new one and at most $3 - 1 others
-- remain ($3 = 0: no limit).
WITH ranked AS (
    SELECT s.id,
           s.expires_at IS NOT NULL AND s.expires_at <= pg_catalog.now() AS expired,
           s.created_at
      FROM castle.sessions AS s
     WHERE s.user_id = $1 AND s.id <> $2
), numbered AS (
    SELECT r.id, r.expired,
           pg_catalog.row_number() OVER (ORDER BY r.expired, r.created_at DESC, r.id DESC) AS keep_rank
      FROM ranked AS r
)
DELETE FROM castle.sessions AS s
 USING numbered AS n
 WHERE s.id = n.id
   AND (n.expired OR ($3 > 0 AND n.keep_rank >= $3))
