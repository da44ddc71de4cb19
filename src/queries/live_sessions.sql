-- The user's devices at time $3 ($2: idle timeout in seconds, 0 = off), most
-- recently used first: the "active devices" page. A device is a family (a
-- sign-in and every session rotated from it), shown as its newest live
-- session; a token rotated away is never one.
SELECT d.session
  FROM (SELECT DISTINCT ON (COALESCE(s.family_id, s.id))
               ROW(s.id, s.user_id, s.created_at, s.updated_at, s.expires_at, s.used_at, s.data)::castle.session AS session,
               COALESCE(s.used_at, s.created_at) AS last_use, s.id
          FROM castle.sessions AS s
         WHERE s.user_id = $1
           AND s.rotated_at IS NULL
           AND (s.expires_at IS NULL OR s.expires_at > $3)
           AND ($2 <= 0 OR COALESCE(s.used_at, s.created_at) > $3 - pg_catalog.make_interval(secs => $2))
         ORDER BY COALESCE(s.family_id, s.id), s.id DESC) AS d
 ORDER BY d.last_use DESC, d.id DESC
