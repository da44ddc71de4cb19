-- A shard's sign-in (src/shard.rs): the id carries the user's bucket ($7) in
-- its low ten bits, so that it names the shard under any split.
INSERT INTO castle.sessions (id, hash, user_id, created_at, updated_at, expires_at, family_id, data)
VALUES (pg_catalog.nextval('castle.sessions_id_seq'::pg_catalog.regclass) * 1024 + $7,
        $1, $2, $3, $3, $4, $6, $5)
RETURNING id
