-- Rotation with a grace window, reuse detection, and what a DBA sees of it.
-- The reuse worker revokes a family in a transaction of its own: wait_until
-- (00_setup.sql) polls for what it did.
CREATE TEMP TABLE counted AS SELECT * FROM castle.stats WHERE datname = current_database();
SELECT collecting FROM counted;
SHOW castle.rotate_grace;

-- within the grace the rotated-away token stands for its successor: same
-- user, same data, the successor's id (what login binds)
SELECT castle.create_session('rita', '1 hour', '{"device": "phone"}') AS a \gset
SELECT (castle.verify(:'a')).id AS a_id \gset
SELECT castle.rotate(:'a') AS b \gset
SELECT (castle.verify(:'b')).id AS b_id \gset
SELECT id = :b_id AS successor, user_id, data FROM castle.authenticate(:'a');
BEGIN;
SELECT id = :b_id AS login_binds_successor FROM castle.login(:'a');
SELECT castle.session_id() = :b_id AS session_id_is_successor;
COMMIT;
SELECT castle.is_valid(:'a') AS a_valid, castle.is_valid(:'b') AS b_valid;
-- a token rotated away is not a device
SELECT count(*) AS rita_devices FROM castle.sessions_of('rita');
SELECT rotated_sessions >= 1 AS overview_counts_rotated FROM castle.overview();

-- rotating it again within the grace hands back the same successor (two
-- tabs raced, or a thief copied it): one family, one live session
SELECT castle.rotate(:'a') AS c \gset
SELECT :'c' = :'b' AS same_successor, castle.is_valid(:'b') AS b_still_valid,
       (SELECT count(DISTINCT coalesce(family_id, id)) FROM castle.sessions WHERE user_id = 'rita') AS families,
       (SELECT count(*) FROM castle.sessions WHERE user_id = 'rita' AND rotated_at IS NULL) AS live_sessions,
       (SELECT count(*) FROM castle.sessions_of('rita')) AS still_one_device;

-- after the grace it is a reuse: refused like any bad token, and the whole
-- family is revoked, successors included
UPDATE castle.sessions SET rotated_at = rotated_at - interval '1 minute' WHERE id = :a_id;
SELECT refusal(format('SELECT castle.authenticate(%L)', :'a')) AS reuse_refused;
SELECT wait_until(format('NOT castle.is_valid(%L) AND NOT castle.is_valid(%L)', :'b', :'c')) AS family_revoked;
SELECT count(*) AS rita_rows_left FROM castle.sessions WHERE user_id = 'rita';
-- a rotation's successor of a family that no longer exists is refused too
SELECT refusal(format('SELECT castle.rotate(%L)', :'b')) AS successor_refused;

-- every way of presenting a reused token refuses it and revokes the family
SELECT castle.create_session('sam') AS s1 \gset
-- its id before the rotation: after it, verify gives the successor's
SELECT (castle.verify(:'s1')).id AS s1_id \gset
SELECT castle.rotate(:'s1') AS s2 \gset
UPDATE castle.sessions SET rotated_at = now() - interval '1 hour' WHERE id = :s1_id;
SELECT castle.verify(:'s1') IS NULL AS verify_null, castle.is_valid(:'s1') AS is_valid,
       castle.revoke(:'s1') AS revoke, refusal(format('SELECT castle.rotate(%L)', :'s1')) AS rotate,
       refusal(format('SELECT castle.login(%L)', :'s1')) AS login;
SELECT wait_until(format('NOT castle.is_valid(%L)', :'s2')) AS sam_family_revoked;

-- castle.rotate_grace = 0: the old token is a reuse at once
SET castle.rotate_grace = 0;
SELECT castle.create_session('una') AS u1 \gset
SELECT castle.rotate(:'u1') AS u2 \gset
SELECT castle.verify(:'u1') IS NULL AS refused_at_once;
SELECT wait_until(format('NOT castle.is_valid(%L)', :'u2')) AS una_family_revoked;
RESET castle.rotate_grace;

-- sign-out revokes the whole family, by token or by id
SELECT castle.create_session('vic') AS v1 \gset
SELECT castle.rotate(:'v1') AS v2 \gset
SELECT castle.revoke(:'v1') AS revoked_by_old_token, castle.is_valid(:'v2') AS v2_valid;
SELECT count(*) AS vic_rows FROM castle.sessions WHERE user_id = 'vic';
SELECT castle.create_session('vic') AS v3 \gset
SELECT castle.rotate(:'v3') AS v4 \gset
SELECT castle.revoke_session((castle.verify(:'v4')).id) AS revoked_by_id;
SELECT count(*) AS vic_rows FROM castle.sessions WHERE user_id = 'vic';

-- trimming counts the family's newest session, not the token rotated away
SET castle.max_sessions = 2;
SELECT castle.create_session('tom') AS t1 \gset
SELECT castle.create_session('tom') AS t2 \gset
SELECT castle.rotate(:'t1') AS t3 \gset
SELECT castle.create_session('tom') AS t4 \gset
SELECT castle.is_valid(:'t1') AS t1_stands_for_t3, castle.is_valid(:'t2') AS t2_trimmed,
       castle.is_valid(:'t3') AS t3, castle.is_valid(:'t4') AS t4,
       (SELECT count(*) FROM castle.sessions_of('tom')) AS tom_devices;
RESET castle.max_sessions;
-- revoke_all keeps the family of the session it spares, and ends the grace
-- of the tokens that family rotated away: a copy of one (a thief's) is a
-- reuse from then on, and revokes the family
SELECT castle.revoke_all('tom', (castle.verify(:'t3')).id) AS revoked_others,
       castle.is_valid(:'t3') AS t3;
SELECT castle.is_valid(:'t1') AS t1_copy_valid;
SELECT wait_until(format('NOT castle.is_valid(%L)', :'t3')) AS tom_family_revoked;

-- prune: a rotated-away token goes once its family has nothing left
SELECT castle.create_session('wes', '1 hour') AS w1 \gset
SELECT castle.rotate(:'w1') AS w2 \gset
SELECT (castle.verify(:'w2')).id AS w2_id \gset
UPDATE castle.sessions SET expires_at = now() - interval '1 second' WHERE id = :w2_id;
SELECT castle.prune() >= 1 AS pruned_successor, castle.prune() >= 1 AS pruned_rotated;
SELECT count(*) AS wes_rows FROM castle.sessions WHERE user_id = 'wes';

-- a family remembers every token it rotated away in the last hour, however
-- many rotations follow: nine quick refreshes do not flush the first
SELECT castle.create_session('xia') AS x0 \gset
SELECT castle.rotate(:'x0') AS x \gset
SELECT castle.rotate(:'x') AS x \gset
SELECT castle.rotate(:'x') AS x \gset
SELECT castle.rotate(:'x') AS x \gset
SELECT castle.rotate(:'x') AS x \gset
SELECT castle.rotate(:'x') AS x \gset
SELECT castle.rotate(:'x') AS x \gset
SELECT castle.rotate(:'x') AS x \gset
SELECT castle.rotate(:'x') AS x \gset
SELECT count(*) FILTER (WHERE rotated_at IS NOT NULL) AS rotated_kept,
       count(*) FILTER (WHERE rotated_at IS NULL) AS current
  FROM castle.sessions WHERE user_id = 'xia';
-- past the hour it keeps its 8 newest: an older one is forgotten at the
-- next rotation, then refused as unknown, and revokes nothing
UPDATE castle.sessions SET rotated_at = now() - interval '2 hours' WHERE user_id = 'xia' AND rotated_at IS NOT NULL;
SELECT castle.rotate(:'x') AS x \gset
SELECT count(*) FILTER (WHERE rotated_at IS NOT NULL) AS rotated_kept_past_the_hour
  FROM castle.sessions WHERE user_id = 'xia';
UPDATE castle.sessions SET rotated_at = now() - interval '2 hours' WHERE user_id = 'xia' AND rotated_at IS NOT NULL;
SELECT castle.is_valid(:'x0') AS forgotten_token, castle.is_valid(:'x') AS newest_still_valid;

-- the counters moved by what this file did (this database, this backend and
-- the reuse worker only)
SELECT pg_sleep(0.5);  -- a reuse worker the forgotten token would have started
SELECT castle.is_valid(:'x') AS xia_not_revoked;
SELECT s.sessions_created - c.sessions_created AS sessions_created,
       s.rotations - c.rotations AS rotations,
       -- 4 to 9: a presentation after the worker revoked the family is an unknown id
       s.refused_reuse - c.refused_reuse BETWEEN 4 AND 9 AS refused_reuse,
       s.reuses_detected - c.reuses_detected AS reuses_detected,
       s.revoked_by_token - c.revoked_by_token AS revoked_by_token,
       s.revoked_by_id - c.revoked_by_id AS revoked_by_id,
       s.revoked_by_user - c.revoked_by_user AS revoked_by_user,
       s.trimmed - c.trimmed AS trimmed,
       s.pruned - c.pruned >= 2 AS pruned,
       s.authentications > c.authentications AS authentications
  FROM castle.stats AS s, counted AS c WHERE s.datname = current_database();
SELECT castle.stats_reset();
SELECT sessions_created, rotations, stats_reset > now() - interval '1 minute' AS just_reset
  FROM castle.stats WHERE datname = current_database();
SELECT live_sessions >= 0 AS live, users <= live_sessions AS users, dead_sessions >= 0 AS dead
  FROM castle.overview();

-- the counters and the overview are for pg_monitor and the owner, never PUBLIC
CREATE ROLE castle_watcher IN ROLE pg_monitor;
CREATE ROLE castle_nobody;
SET ROLE castle_nobody;
SELECT refusal('SELECT * FROM castle.stats') AS nobody_stats;
SELECT refusal('SELECT * FROM castle.overview()') AS nobody_overview;
SET ROLE castle_watcher;
SELECT count(*) >= 1 AS watcher_stats FROM castle.stats;
SELECT live_sessions >= 0 AS watcher_overview FROM castle.overview();
SELECT refusal('SELECT castle.stats_reset()') AS watcher_reset;
RESET ROLE;
DROP ROLE castle_watcher;
DROP ROLE castle_nobody;
