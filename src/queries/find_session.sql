-- The row a token names: its hash to check, whether it is dead (expired, or
-- idle for longer than $2 seconds when $2 > 0), whether a used_at write is due
-- (last one more than $3 seconds ago; $3 < 0: never), and the session as
-- returned to the caller (never the hash).
SELECT s.hash,
       (s.expires_at IS NOT NULL AND s.expires_at <= pg_catalog.now())
         OR ($2 > 0 AND COALESCE(s.used_at, s.created_at)
                        <= pg_catalog.now() - pg_catalog.make_interval(secs => $2)) AS dead,
       $3 >= 0 AND (s.used_at IS NULL
                    OR s.used_at <= pg_catalog.now() - pg_catalog.make_interval(secs => $3)) AS touch_due,
       ROW(s.id, s.user_id, s.created_at, s.updated_at, s.expires_at, s.used_at, s.data)::castle.session
  FROM castle.sessions AS s
 WHERE s.id = $1
