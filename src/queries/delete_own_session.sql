-- Sign out one device of user $2 (the logged-in user): nobody else's.
DELETE FROM castle.sessions AS s WHERE s.id = $1 AND s.user_id = $2
