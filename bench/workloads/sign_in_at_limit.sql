-- castle.create_session for a user at castle.max_sessions (limit-1..limit-N
-- hold 3 sessions each, bench.load_users_at_limit): each trims the oldest
\set u random(1, :at_limit)
SELECT castle.create_session('limit-' || :u);
