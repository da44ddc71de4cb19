INSERT INTO castle.sessions (hash, user_id, expires_at, data)
VALUES ($1, $2, pg_catalog.now() + $3, $4)
RETURNING id
