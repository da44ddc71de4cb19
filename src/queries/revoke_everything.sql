-- The incident switch: deletes every session whose token was issued before
-- $1 (NULL: every session), rotated away or not, and counts them. The caller
-- holds castle.sessions in SHARE ROW EXCLUSIVE mode, so no sign-in or
-- rotation is in flight and none starts until it commits.
WITH revoked AS (
    DELETE FROM castle.sessions AS s
     WHERE $1::pg_catalog.timestamptz IS NULL OR s.created_at < $1
    RETURNING 1
)
SELECT pg_catalog.count(*) FROM revoked
