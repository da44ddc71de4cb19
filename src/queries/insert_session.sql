-- Insert the new session ($1 hash, $2 user, $3 ttl, $4 data) and, in the same
-- statement, delete the user's dead sessions (expired, or idle for longer than
-- $6 seconds when $6 > 0) and all but the newest $5 - 1 live ones ($5 = 0: no
-- limit). The caller holds the user's lock, so this statement's snapshot has
-- every committed session of the user; the new row is not among them.
WITH inserted AS (
    INSERT INTO castle.sessions (hash, user_id, expires_at, data)
    VALUES ($1, $2, pg_catalog.now() + $3, $4)
    RETURNING id
), others AS (
    SELECT s.id, s.created_at,
           (s.expires_at IS NOT NULL AND s.expires_at <= pg_catalog.now())
             OR ($6 > 0 AND COALESCE(s.used_at, s.created_at)
                            <= pg_catalog.now() - pg_catalog.make_interval(secs => $6)) AS dead
      FROM castle.sessions AS s
     WHERE s.user_id = $2
), ranked AS (
    SELECT o.id, o.dead,
           pg_catalog.row_number() OVER (ORDER BY o.dead, o.created_at DESC, o.id DESC) AS keep_rank
      FROM others AS o
), trimmed AS (
    DELETE FROM castle.sessions AS s
     USING ranked AS r
     WHERE s.id = r.id
       AND (r.dead OR ($5 > 0 AND r.keep_rank >= $5))
)
SELECT i.id FROM inserted AS i
