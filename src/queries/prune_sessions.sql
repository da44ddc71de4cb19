-- One batch of what no longer serves: sessions that are dead (expired, or
-- idle for longer than $2 seconds when $2 > 0), and sessions rotated away
-- that either expired or whose family has no session left that was not
-- rotated away (nothing left to protect from a reuse). Rows another
-- transaction holds are skipped, not waited for, and the batch bounds how
-- long this statement holds the rows it deletes.
WITH doomed AS (
    SELECT s.id
      FROM castle.sessions AS s
     WHERE (s.expires_at IS NOT NULL AND s.expires_at <= pg_catalog.now())
        OR (s.rotated_at IS NULL AND $2 > 0
            AND COALESCE(s.used_at, s.created_at)
                <= pg_catalog.now() - pg_catalog.make_interval(secs => $2))
        OR (s.rotated_at IS NOT NULL
            AND NOT EXISTS (SELECT FROM castle.sessions AS c
                             WHERE c.family_id = COALESCE(s.family_id, s.id)
                               AND c.rotated_at IS NULL))
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
DELETE FROM castle.sessions AS s
 USING doomed AS d
 WHERE s.id = d.id
RETURNING s.id
