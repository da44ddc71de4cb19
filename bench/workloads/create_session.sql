-- castle.create_session for a random user (users c1..cN; each keeps 3 sessions)
\set u random(1, :users)
SELECT castle.create_session('c' || :u::int);
