-- Make room for one more sign-in of user $1: delete the user's dead sessions
-- (expired, or idle for longer than $3 seconds when $3 > 0, at time $4), then
-- the families (sign-ins, with every session rotated from them) least
-- recently renewed, so that at most $2 - 1 families with a live session
-- remain. A family is one device, however many of its sessions are live
-- (two rotations of one token raced); tokens rotated away are not counted,
-- and go with their family or, later, with prune. The caller holds the
-- user's lock, so this statement's snapshot has every committed session.
-- Families go strictly by age, whoever holds their rows: the live sessions of
-- the families that must go are waited for (the standing worker recording a
-- use holds a row for a moment; before uses went to it, families a request
-- held were chosen last, and a newer device was signed out while the oldest
-- one's use was being written). Dead sessions and tokens
-- rotated away that another transaction is deleting (a prune batch, a
-- family's revocation) are skipped: they count for nothing, and waiting for
-- them made a sign-in wait for prune batch after prune batch. A KEY SHARE
-- lock conflicts with those deletions but not with a request recording a
-- use (FOR NO KEY UPDATE): an idle session that a request found live just
-- before it went idle is waited for and deleted, never left to come back.
WITH mine AS (
    SELECT s.id, COALESCE(s.family_id, s.id) AS family, s.created_at,
           s.rotated_at IS NOT NULL AS rotated,
           (s.expires_at IS NOT NULL AND s.expires_at <= $4)
             OR ($3 > 0 AND COALESCE(s.used_at, s.created_at)
                            <= $4 - pg_catalog.make_interval(secs => $3)) AS dead
      FROM castle.sessions AS s
     WHERE s.user_id = $1
), families AS (
    SELECT m.family, pg_catalog.max(m.created_at) AS renewed
      FROM mine AS m
     WHERE NOT m.rotated AND NOT m.dead
     GROUP BY m.family
), ranked AS (
    SELECT f.family,
           pg_catalog.row_number() OVER (ORDER BY f.renewed, f.family) AS victim_rank,
           pg_catalog.count(*) OVER () AS live_families
      FROM families AS f
), victims AS (
    SELECT m.id, m.rotated, m.dead
      FROM mine AS m
      JOIN ranked AS r ON r.family = m.family
     WHERE r.victim_rank <= r.live_families - ($2 - 1)
), tidied AS (
    -- dead sessions, and the victims' tokens rotated away: only those no one is deleting
    SELECT s.id
      FROM castle.sessions AS s
     WHERE s.user_id = $1
       AND s.id IN (SELECT m.id FROM mine AS m WHERE m.dead AND NOT m.rotated
                      UNION ALL
                      SELECT v.id FROM victims AS v WHERE v.rotated)
       FOR KEY SHARE OF s SKIP LOCKED
), doomed AS (
    SELECT v.id FROM victims AS v WHERE NOT v.rotated AND NOT v.dead
    UNION ALL
    SELECT t.id FROM tidied AS t
)
-- a join on the primary key, not an OR of two IN lists (which scanned the table)
DELETE FROM castle.sessions AS s
 USING doomed AS d
 WHERE s.id = d.id
RETURNING s.id
