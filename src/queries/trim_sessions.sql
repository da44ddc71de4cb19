-- Make room for one more session of user $1: delete the user's dead sessions
-- (expired, or idle for longer than $3 seconds when $3 > 0, at time $4), then
-- the oldest live ones, so that at most $2 - 1 live ones remain. The caller
-- holds the user's lock, so this statement's snapshot has every committed
-- session. Sessions rotated away are not counted (their family's newest
-- is), and are left to prune. Live rows another transaction holds (a request
-- recording a use on a table with a DBA's trigger) are chosen last, so a
-- sign-in waits for a request only when nothing else can go.
WITH mine AS (
    SELECT s.id, s.created_at,
           (s.expires_at IS NOT NULL AND s.expires_at <= $4)
             OR ($3 > 0 AND COALESCE(s.used_at, s.created_at)
                            <= $4 - pg_catalog.make_interval(secs => $3)) AS dead
      FROM castle.sessions AS s
     WHERE s.user_id = $1 AND s.rotated_at IS NULL
), lockable AS (
    -- the live ones (mine's condition, negated) that no one else holds
    SELECT s.id
      FROM castle.sessions AS s
     WHERE s.user_id = $1 AND s.rotated_at IS NULL
       AND NOT ((s.expires_at IS NOT NULL AND s.expires_at <= $4)
                OR ($3 > 0 AND COALESCE(s.used_at, s.created_at)
                               <= $4 - pg_catalog.make_interval(secs => $3)))
       FOR UPDATE SKIP LOCKED
), live AS (
    SELECT m.id,
           pg_catalog.row_number() OVER (ORDER BY (l.id IS NOT NULL) DESC, m.created_at, m.id) AS victim_rank,
           pg_catalog.count(*) OVER () AS live_count
      FROM mine AS m
      LEFT JOIN lockable AS l ON l.id = m.id
     WHERE NOT m.dead
), doomed AS (
    SELECT m.id FROM mine AS m WHERE m.dead
    UNION ALL
    SELECT v.id FROM live AS v WHERE v.victim_rank <= v.live_count - ($2 - 1)
)
-- a join on the primary key, not an OR of two IN lists (which scanned the table)
DELETE FROM castle.sessions AS s
 USING doomed AS d
 WHERE s.id = d.id
RETURNING s.id
