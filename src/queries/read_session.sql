-- authenticate's read by id when the direct read is not allowed (a DBA's
-- change to the table or its indexes, or an executor hook). Each column is
-- cast to the type the caller expects, so a retyped column still reads.
SELECT s.id::pg_catalog.int8, s.hash::pg_catalog.text, s.user_id::pg_catalog.text,
       s.created_at::pg_catalog.timestamptz, s.updated_at::pg_catalog.timestamptz,
       s.expires_at::pg_catalog.timestamptz, s.used_at::pg_catalog.timestamptz,
       s.data::pg_catalog.jsonb, s.family_id::pg_catalog.int8,
       s.rotated_at::pg_catalog.timestamptz
  FROM castle.sessions AS s
 WHERE s.id = $1
 LIMIT 1
