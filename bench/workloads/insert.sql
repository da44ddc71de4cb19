-- the physical floor of issuing: a bare INSERT of a session row (users i1..iN; run.sh deletes them after each round)
\set u random(1, :users)
INSERT INTO castle.sessions (hash, user_id) VALUES ('1b32c28cb38c05480eccc1bd60ff97029b57a05c96718b96dad7e9d84894f549', 'i' || :u::int);
