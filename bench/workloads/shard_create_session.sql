-- castle.create_session of a user of partition 0, on the shard itself or through the router
\set n random(1, :nusers)
SELECT castle.create_session((SELECT u.user_id FROM bench_users AS u WHERE u.n = :n));
