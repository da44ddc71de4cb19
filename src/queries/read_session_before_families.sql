-- The same read on 0.4.0's objects, before ALTER EXTENSION ... UPDATE adds
-- family_id and rotated_at: every session is its own family, none rotated.
SELECT s.id::pg_catalog.int8, s.hash::pg_catalog.text, s.user_id::pg_catalog.text,
       s.created_at::pg_catalog.timestamptz, s.updated_at::pg_catalog.timestamptz,
       s.expires_at::pg_catalog.timestamptz, s.used_at::pg_catalog.timestamptz,
       s.data::pg_catalog.jsonb, NULL::pg_catalog.int8, NULL::pg_catalog.timestamptz
  FROM castle.sessions AS s
 WHERE s.id = $1
 LIMIT 1
