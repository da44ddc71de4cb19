-- After a new session ($2) for user $1: delete the user's dead sessions
-- (expired, or idle for longer than $4 seconds when $4 > 0), then the oldest
-- live ones, so that the new one and at most $3 - 1 others remain ($3 = 0: no limit).
WITH others AS (
    SELECT s.id, s.created_at,
           (s.expires_at IS NOT NULL AND s.expires_at <= pg_catalog.now())
             OR ($4 > 0 AND COALESCE(s.used_at, s.created_at)
                            <= pg_catalog.now() - pg_catalog.make_interval(secs => $4)) AS dead
      FROM castle.sessions AS s
     WHERE s.user_id = $1 AND s.id <> $2
), ranked AS (
    SELECT o.id, o.dead,
           pg_catalog.row_number() OVER (ORDER BY o.dead, o.created_at DESC, o.id DESC) AS keep_rank
      FROM others AS o
)
DELETE FROM castle.sessions AS s
 USING ranked AS r
 WHERE s.id = r.id
   AND (r.dead OR ($3 > 0 AND r.keep_rank >= $3))
