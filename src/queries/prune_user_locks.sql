-- One batch of lock rows of users with no session left (their last ones
-- expired, or were pruned). A row a sign-in holds is skipped; one deleted
-- under a sign-in about to commit costs nothing but its remaking: the row is
-- a mutex made on first use, never a record.
DELETE FROM castle.user_locks AS l
 WHERE l.user_id IN (SELECT k.user_id
                       FROM castle.user_locks AS k
                      WHERE NOT EXISTS (SELECT FROM castle.sessions AS s WHERE s.user_id = k.user_id)
                      LIMIT $1
                        FOR UPDATE SKIP LOCKED)
