SELECT s.user_id FROM castle.sessions AS s WHERE s.id = $1
