-- A sign-in's row: created_at and updated_at are the time of the call ($3);
-- $6 is the family of a rotation's successor, NULL for a new sign-in.
INSERT INTO castle.sessions (hash, user_id, created_at, updated_at, expires_at, family_id, data)
VALUES ($1, $2, $3, $3, $4, $6, $5)
RETURNING id
