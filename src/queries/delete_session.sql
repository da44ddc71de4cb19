DELETE FROM castle.sessions AS s WHERE s.id = $1
