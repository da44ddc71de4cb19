-- A sign-in's row: created_at and updated_at are the time of the call ($3).
INSERT INTO castle.sessions (hash, user_id, created_at, updated_at, expires_at, data)
VALUES ($1, $2, $3, $3, $4, $5)
RETURNING id
