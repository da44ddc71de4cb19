-- Sign out everywhere ($2 NULL), or everywhere but session $2.
DELETE FROM castle.sessions AS s
 WHERE s.user_id = $1 AND ($2 IS NULL OR s.id <> $2)
