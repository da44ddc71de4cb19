-- Delete a session and hand back the data a rotation carries over to its successor.
DELETE FROM castle.sessions AS s WHERE s.id = $1 RETURNING s.data
