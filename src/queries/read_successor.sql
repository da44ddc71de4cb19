-- The newest session of family $1 that was not rotated away: what a token
-- rotated away from the family stands for within castle.rotate_grace. Every
-- successor carries its family's id; the family's first session never does.
SELECT s.id::pg_catalog.int8, s.hash::pg_catalog.text, s.user_id::pg_catalog.text,
       s.created_at::pg_catalog.timestamptz, s.updated_at::pg_catalog.timestamptz,
       s.expires_at::pg_catalog.timestamptz, s.used_at::pg_catalog.timestamptz,
       s.data::pg_catalog.jsonb, s.family_id::pg_catalog.int8,
       s.rotated_at::pg_catalog.timestamptz
  FROM castle.sessions AS s
 WHERE s.family_id = $1 AND s.rotated_at IS NULL
 ORDER BY s.id DESC
 LIMIT 1
