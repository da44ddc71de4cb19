-- When create_session returns, the user holds at most castle.max_sessions
-- sessions: expired ones go first, then the oldest. (The seed kept one too many.)
SHOW castle.max_sessions;
SELECT castle.create_session('carol') AS c1 \gset
SELECT castle.create_session('carol') AS c2 \gset
SELECT castle.create_session('carol') AS c3 \gset
SELECT count(*) AS carol_sessions FROM castle.sessions WHERE user_id = 'carol';
SELECT castle.create_session('carol') AS c4 \gset
SELECT count(*) AS carol_sessions FROM castle.sessions WHERE user_id = 'carol';
SELECT (castle.verify(:'c1')).id IS NULL AS oldest_trimmed,
       (castle.verify(:'c2')).id IS NOT NULL AS c2_kept,
       (castle.verify(:'c3')).id IS NOT NULL AS c3_kept,
       (castle.verify(:'c4')).id IS NOT NULL AS newest_kept;
-- an expired session goes before any live one, however new
SELECT (castle.verify(:'c4')).id AS c4_id \gset
UPDATE castle.sessions SET expires_at = now() - interval '1 minute' WHERE id = :c4_id;
SELECT castle.create_session('carol') AS c5 \gset
SELECT (castle.verify(:'c2')).id IS NOT NULL AS c2_kept,
       (castle.verify(:'c3')).id IS NOT NULL AS c3_kept,
       (castle.verify(:'c5')).id IS NOT NULL AS c5_kept,
       count(*) AS carol_sessions
  FROM castle.sessions WHERE user_id = 'carol';
-- other users are untouched
SELECT castle.create_session('dave') AS d1 \gset
SELECT (castle.verify(:'d1')).id IS NOT NULL AS dave_kept,
       (SELECT count(*) FROM castle.sessions WHERE user_id = 'carol') AS carol_sessions;
-- max_sessions = 1: only the newest; 0: unlimited
SET castle.max_sessions = 1;
SELECT castle.create_session('carol') AS c6 \gset
SELECT count(*) AS carol_sessions, (castle.verify(:'c6')).id IS NOT NULL AS newest_kept
  FROM castle.sessions WHERE user_id = 'carol';
SET castle.max_sessions = 0;
SELECT count(castle.create_session('erin')) FROM generate_series(1, 10);
SELECT count(*) AS erin_sessions FROM castle.sessions WHERE user_id = 'erin';
-- many sessions created in one statement still leave exactly the maximum
SET castle.max_sessions = 3;
SELECT count(castle.create_session('erin')) FROM generate_series(1, 2);
SELECT count(*) AS erin_sessions FROM castle.sessions WHERE user_id = 'erin';
RESET castle.max_sessions;
