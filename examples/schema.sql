-- The demo schema both example services use (examples/python_service and
-- examples/node_service). Run it once, as a superuser, in an empty database:
--     psql -v ON_ERROR_STOP=1 -d notes_demo -f examples/schema.sql
CREATE EXTENSION IF NOT EXISTS castle_sessions;

-- The role the services connect as. It must not own the tables, be a superuser
-- or have BYPASSRLS: any of those would skip the policy below. Roles are
-- cluster-wide, hence the guard when a second database loads this file.
DO $$ BEGIN
    CREATE ROLE notes_app LOGIN NOSUPERUSER NOBYPASSRLS;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
GRANT USAGE ON SCHEMA castle TO notes_app;
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA castle TO notes_app;

-- password_hash is 'scrypt$<salt hex>$<key hex>' (N=16384, r=8, p=1, 32 bytes),
-- which both Python's hashlib and Node's crypto compute without extra packages.
CREATE TABLE app_users (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    password_hash text NOT NULL
);
GRANT SELECT ON app_users TO notes_app;

CREATE TABLE notes (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id bigint NOT NULL REFERENCES app_users,
    body text NOT NULL
);
-- Each request sees only the notes of the user whose session castle.login
-- bound to its transaction; with no login, castle.user_id() is NULL and no row
-- matches.
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY notes_owner ON notes USING (owner_id = castle.user_id()::bigint);
GRANT SELECT ON notes TO notes_app;

-- Demo users, with their passwords in plain sight: 'alice-demo-password' and
-- 'bob-demo-password'.
INSERT INTO app_users (id, name, password_hash) VALUES
    (1, 'alice', 'scrypt$be6eac2e3f94d5f701596aaa678a6ea6$72e90fe60b0e4ad7c4717e8683fd7ad1a194071ce00081de96c28a5ccb352806'),
    (2, 'bob', 'scrypt$8921e5cf21c8f12ebbc6e4e30a65f5d1$d1db5e3ed21c6fe01582e37ba15a3d417329adadeff2d6adaec72d1f31d1eadf');
INSERT INTO notes (owner_id, body) VALUES
    (1, 'alice: buy milk'),
    (2, 'bob: call the plumber'),
    (1, 'alice: renew passport');
