-- castle.overview(): live sessions, their distinct users, dead sessions
-- waiting for prune, sessions rotated away (kept for their grace and for
-- reuse detection), and the oldest live session's creation ($1: idle
-- timeout in seconds, 0 = off). Rotated-away sessions are neither live nor dead.
WITH judged AS (
    SELECT s.user_id, s.created_at, s.rotated_at IS NOT NULL AS rotated,
           (s.expires_at IS NOT NULL AND s.expires_at <= pg_catalog.now())
             OR ($1 > 0 AND COALESCE(s.used_at, s.created_at)
                            <= pg_catalog.now() - pg_catalog.make_interval(secs => $1)) AS dead
      FROM castle.sessions AS s
)
SELECT pg_catalog.count(*) FILTER (WHERE NOT j.rotated AND NOT j.dead),
       pg_catalog.count(DISTINCT j.user_id) FILTER (WHERE NOT j.rotated AND NOT j.dead),
       pg_catalog.count(*) FILTER (WHERE NOT j.rotated AND j.dead),
       pg_catalog.count(*) FILTER (WHERE j.rotated),
       pg_catalog.min(j.created_at) FILTER (WHERE NOT j.rotated AND NOT j.dead)
  FROM judged AS j
