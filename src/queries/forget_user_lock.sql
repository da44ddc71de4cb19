-- User $1's lock row, once the user has no session left: a row per user
-- ever seen would grow without bound. The caller holds the row; the next
-- sign-in makes it again.
DELETE FROM castle.user_locks AS l
 WHERE l.user_id = $1
   AND NOT EXISTS (SELECT FROM castle.sessions AS s WHERE s.user_id = $1)
