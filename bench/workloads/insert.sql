-- the physical floor of issuing: a bare INSERT of a session row, for the same
-- users c1..cN that create_session signs in (so both write into the same part
-- of the user index); run.sh deletes these rows, known by their hash, after each round
\set u random(1, :users)
INSERT INTO castle.sessions (hash, user_id) VALUES ('1b32c28cb38c05480eccc1bd60ff97029b57a05c96718b96dad7e9d84894f549', 'c' || :u::int);
