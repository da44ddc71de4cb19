-- The user's live sessions at time $3 ($2: idle timeout in seconds, 0 = off),
-- most recently used first: the "active devices" page. A token rotated away
-- is not a device: its family's newest session is.
SELECT ROW(s.id, s.user_id, s.created_at, s.updated_at, s.expires_at, s.used_at, s.data)::castle.session
  FROM castle.sessions AS s
 WHERE s.user_id = $1
   AND s.rotated_at IS NULL
   AND (s.expires_at IS NULL OR s.expires_at > $3)
   AND ($2 <= 0 OR COALESCE(s.used_at, s.created_at) > $3 - pg_catalog.make_interval(secs => $2))
 ORDER BY COALESCE(s.used_at, s.created_at) DESC, s.id DESC
