-- The README's tour: run by scripts/tour.sh against its own throwaway cluster.
\pset footer off
\set VERBOSITY default
\echo
\echo '1. create_session(42, ''1 hour'', data): the token, shown this once and never stored'
SELECT castle.create_session(42, '1 hour', '{"device": "laptop"}') AS token \gset
\echo :token
\echo
\echo '2. authenticate(token): the session it names (the table keeps only a SHA-256 of the secret)'
SELECT * FROM castle.authenticate(:'token');
SELECT id, left(hash, 16) || '…' AS stored_hash, user_id FROM castle.sessions;
\echo
\echo '3. Trimming: when create_session returns, the user holds at most castle.max_sessions sessions'
SHOW castle.max_sessions;
\echo '   user 42 signs in four more times ...'
SELECT castle.create_session(42) IS NOT NULL AS signed_in FROM generate_series(1, 4);
SELECT count(*) AS sessions_of_42 FROM castle.sessions WHERE user_id = '42';
\echo '   ... so the oldest session, the first token, was trimmed:'
SELECT (castle.verify(:'token')).id IS NULL AS first_token_now_refused;
\echo
\echo '4. An expired session is refused'
SELECT castle.create_session('alice@example.com', '1 second') AS short_token \gset
SELECT pg_sleep(1.2);
\set ON_ERROR_STOP 0
SELECT * FROM castle.authenticate(:'short_token');
\echo '   SQLSTATE' :LAST_ERROR_SQLSTATE
\echo
\echo '5. A bad token is refused the same way: one SQLSTATE (28000), one message, no hint of why'
SELECT * FROM castle.authenticate('oat_MQ.bm90LWEtcmVhbC1zZWNyZXQ');
\echo '   SQLSTATE' :LAST_ERROR_SQLSTATE
SELECT * FROM castle.authenticate(NULL);
\echo '   SQLSTATE' :LAST_ERROR_SQLSTATE
\set ON_ERROR_STOP 1
\echo
\echo '   verify() says the same with NULL, for WHERE clauses and CASE:'
SELECT (castle.verify('oat_MQ.bm90LWEtcmVhbC1zZWNyZXQ')).id IS NULL AS refused;
\echo
\echo '6. rotate(token): a new token; the old one stands for it for castle.rotate_grace ...'
SELECT castle.create_session('bob', '1 hour', '{"device": "phone"}') AS old_token \gset
SELECT castle.rotate(:'old_token') AS new_token \gset
SELECT (castle.verify(:'old_token')).id = (castle.verify(:'new_token')).id AS old_stands_for_new;
\echo '   ... rotating it again (a second tab, or a thief who copied it) hands back the same token ...'
SELECT castle.rotate(:'old_token') = :'new_token' AS same_successor;
\echo '   ... and after the grace, the old token is a reuse: refused, and the whole sign-in revoked'
UPDATE castle.sessions SET rotated_at = now() - interval '1 minute' WHERE rotated_at IS NOT NULL;
SELECT castle.is_valid(:'old_token') AS old_valid;
-- the revocation is done by castle's background worker, in a moment
DO $$ BEGIN
    FOR i IN 1..100 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM castle.sessions WHERE user_id = 'bob');
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT castle.is_valid(:'new_token') AS new_valid_after_reuse;
\echo
\echo '7. What the DBA sees: castle.stats (pg_monitor) and castle.overview()'
SELECT sessions_created, authentications, refused_malformed, refused_wrong_secret,
       refused_expired, rotations, trimmed, reuses_detected
  FROM castle.stats WHERE datname = current_database();
SELECT * FROM castle.overview();
