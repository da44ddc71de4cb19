-- Trimming's common case (issue.rs): delete sessions $1, each a family of its
-- own, chosen from a direct read under the user's lock.
DELETE FROM castle.sessions AS s
 WHERE s.id = ANY ($1::pg_catalog.int8[])
RETURNING s.id
