-- The sign-in's insert when castle.sessions has a DBA's trigger or an added
-- column (store::insert writes the row itself otherwise); created_at and
-- updated_at take their defaults, now().
INSERT INTO castle.sessions (hash, user_id, expires_at, data)
VALUES ($1, $2, $3, $4)
RETURNING id
