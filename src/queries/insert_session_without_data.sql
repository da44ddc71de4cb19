-- A sign-in's row without data: the column takes its default (NULL, or what
-- a DBA set), as an INSERT that leaves it out would. $5: the family, as above.
INSERT INTO castle.sessions (hash, user_id, created_at, updated_at, expires_at, family_id)
VALUES ($1, $2, $3, $3, $4, $5)
RETURNING id
