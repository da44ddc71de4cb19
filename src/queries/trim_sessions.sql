-- Make room for one more session of user $1: delete the user's dead sessions
-- (expired, or idle for longer than $3 seconds when $3 > 0), then the oldest
-- live ones, so that at most $2 - 1 remain ($2 = 0: no limit). The caller holds
-- the user's lock, so this statement's snapshot has every committed session.
WITH others AS (
    SELECT s.id, s.created_at,
           (s.expires_at IS NOT NULL AND s.expires_at <= pg_catalog.now())
             OR ($3 > 0 AND COALESCE(s.used_at, s.created_at)
                            <= pg_catalog.now() - pg_catalog.make_interval(secs => $3)) AS dead
      FROM castle.sessions AS s
     WHERE s.user_id = $1
), ranked AS (
    SELECT o.id, o.dead,
           pg_catalog.row_number() OVER (ORDER BY o.dead, o.created_at DESC, o.id DESC) AS keep_rank
      FROM others AS o
)
DELETE FROM castle.sessions AS s
 USING ranked AS r
 WHERE s.id = r.id
   AND (r.dead OR ($2 > 0 AND r.keep_rank >= $2))
