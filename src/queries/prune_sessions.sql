-- One batch of dead sessions: expired, or idle for longer than $2 seconds
-- ($2 > 0). Rows another transaction holds are skipped, not waited for, and
-- the batch bounds how long this statement holds the rows it deletes.
WITH doomed AS (
    SELECT s.id
      FROM castle.sessions AS s
     WHERE (s.expires_at IS NOT NULL AND s.expires_at <= pg_catalog.now())
        OR ($2 > 0 AND COALESCE(s.used_at, s.created_at)
                       <= pg_catalog.now() - pg_catalog.make_interval(secs => $2))
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
DELETE FROM castle.sessions AS s
 USING doomed AS d
 WHERE s.id = d.id
