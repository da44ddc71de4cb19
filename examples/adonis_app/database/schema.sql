-- The example app's schema, run by a superuser in a database with
-- castle_sessions: users, their notes under row-level security, and the
-- two roles (docs/adonis.md). The users' passwords are scrypt hashes made by
-- `node build/bin/hash_password.js`.
CREATE EXTENSION IF NOT EXISTS castle_sessions;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'adonis_app') THEN
        CREATE ROLE adonis_app LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'adonis_sign_in') THEN
        CREATE ROLE adonis_sign_in LOGIN;
    END IF;
END $$;

CREATE TABLE users (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email    text NOT NULL UNIQUE,
    password text NOT NULL,
    name     text NOT NULL
);

CREATE TABLE notes (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users,
    body    text NOT NULL
);
-- each user sees and writes only their own notes, as castle.login bound them
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY notes_of_the_user ON notes
    USING (user_id::text = castle.user_id()) WITH CHECK (user_id::text = castle.user_id());

-- the sign-in role reads users to check a password; the request role never
-- sees a password hash
GRANT SELECT ON users TO adonis_sign_in;
GRANT SELECT (id, email, name) ON users TO adonis_app;
GRANT SELECT, INSERT ON notes TO adonis_app;

SELECT castle.grant_request_role('adonis_app');
SELECT castle.grant_sign_in_role('adonis_sign_in');
