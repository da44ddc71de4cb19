-- The row a token names: its hash to check, whether it is still live, and the
-- session as returned to the caller (never the hash).
SELECT s.hash,
       s.expires_at IS NOT NULL AND s.expires_at <= pg_catalog.now() AS expired,
       ROW(s.id, s.user_id, s.created_at, s.updated_at, s.expires_at, s.used_at, s.data)::castle.session
  FROM castle.sessions AS s
 WHERE s.id = $1
