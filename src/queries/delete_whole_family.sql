-- Sign out one device, or a reuse's revocation: every session of family $1
-- (the first session's id, whether or not that session is still stored;
-- every successor carries it), if the family is user $2's, whose lock the
-- caller holds.
DELETE FROM castle.sessions AS s
 WHERE (s.id = $1 OR s.family_id = $1) AND s.user_id = $2
RETURNING s.id
