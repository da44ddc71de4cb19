-- The user's lock: their row in castle.user_locks, made on first use and
-- locked (by the update) until the transaction ends. Under REPEATABLE READ a
-- row another sign-in changed after this transaction's snapshot raises 40001.
INSERT INTO castle.user_locks AS l (user_id, locked_at)
VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET locked_at = EXCLUDED.locked_at
