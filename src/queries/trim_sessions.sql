-- Make room for one more session of user $1: delete the user's dead sessions
-- (expired, or idle for longer than $3 seconds when $3 > 0, at time $4), then
-- the oldest live ones, so that at most $2 - 1 live ones remain. The caller
-- holds the user's lock, so this statement's snapshot has every committed
-- session. Rows another transaction holds (a request recording a use) are
-- chosen last, so a sign-in waits for a request only when nothing else can go.
WITH lockable AS (
    SELECT s.id
      FROM castle.sessions AS s
     WHERE s.user_id = $1
       FOR UPDATE SKIP LOCKED
), others AS (
    SELECT s.id, s.created_at, (l.id IS NOT NULL) AS free,
           (s.expires_at IS NOT NULL AND s.expires_at <= $4)
             OR ($3 > 0 AND COALESCE(s.used_at, s.created_at)
                            <= $4 - pg_catalog.make_interval(secs => $3)) AS dead
      FROM castle.sessions AS s
      LEFT JOIN lockable AS l ON l.id = s.id
     WHERE s.user_id = $1
), live AS (
    SELECT o.id,
           pg_catalog.row_number() OVER (ORDER BY o.free DESC, o.created_at, o.id) AS victim_rank,
           pg_catalog.count(*) OVER () AS live_count
      FROM others AS o
     -- a dead row another transaction holds may be made live by it (a use
     -- recorded): counted as live, and deleted last
     WHERE NOT o.dead OR NOT o.free
)
DELETE FROM castle.sessions AS s
 WHERE s.id IN (SELECT o.id FROM others AS o WHERE o.dead AND o.free)
    OR s.id IN (SELECT v.id FROM live AS v WHERE v.victim_rank <= v.live_count - ($2 - 1))
