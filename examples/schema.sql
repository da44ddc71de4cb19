-- The demo schema both example services use (examples/python_service and
-- examples/node_service). Run it once, as a superuser, in an empty database:
--     psql -v ON_ERROR_STOP=1 -d notes_demo -f examples/schema.sql
CREATE EXTENSION IF NOT EXISTS castle_sessions;

-- The two roles the services connect as (docs/security.md): the
-- sign-in route as notes_sign_in, which may check passwords and create
-- sessions; every other route as notes_app, which may only check a token and
-- act on its own session, so a SQL injection there cannot become anyone.
-- Neither may own the tables, be a superuser or have BYPASSRLS: any of those
-- would skip the policy below. Roles are cluster-wide, hence the guards.
DO $$ BEGIN
    CREATE ROLE notes_app LOGIN NOSUPERUSER NOBYPASSRLS;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
DO $$ BEGIN
    CREATE ROLE notes_sign_in LOGIN NOSUPERUSER NOBYPASSRLS;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
SELECT castle.grant_request_role('notes_app');
SELECT castle.grant_sign_in_role('notes_sign_in');

-- password_hash is 'scrypt$<salt hex>$<key hex>' (N=16384, r=8, p=1, 32 bytes),
-- which both Python's hashlib and Node's crypto compute without extra packages.
CREATE TABLE app_users (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    password_hash text NOT NULL
);
GRANT SELECT ON app_users TO notes_sign_in;

CREATE TABLE notes (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id bigint NOT NULL REFERENCES app_users,
    body text NOT NULL
);
-- Each request sees only the notes of the user whose session castle.login
-- bound to its transaction; with no login, castle.user_id() is NULL and no row
-- matches. The comparison is as text: castle.user_id() is the id exactly as
-- the session holds it, and a cast to bigint would make '+1' or '01' user 1.
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY notes_owner ON notes USING (owner_id::text = castle.user_id());
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
