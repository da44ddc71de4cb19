"""What the SQL edition (managed/castle_sessions.sql, docs/managed.md) does
that the shared tests cannot show: its settings, which no application role can
change; its auth context, which no role can forge; reuse detection that
survives the caller's rollback through dblink, and what happens without it;
tokens that move to and from the extension by pg_dump, and a database moved
to the extension in place. scripts/managed.sh runs it against a cluster of the
machine's own PostgreSQL without our library, where castle_owner (not a
superuser) installed the edition; the extension's test cluster of
scripts/suite.sh is the other side of every move."""
import os
import pathlib
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "integration"))
from conftest import DB, PG_BIN, PORT, create, dsn  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
EDITION = REPO / "managed" / "castle_sessions.sql"
EXTENSION_PORT = os.environ.get("CASTLE_EXTENSION_PORT")
LOG = pathlib.Path(os.environ.get("CASTLE_CLUSTER_DIR", "/nonexistent")) / "server.log"


def owner():
    return psycopg.connect(dsn(user="castle_owner"), autocommit=True)


@pytest.fixture
def admin():
    with psycopg.connect(dsn(), autocommit=True) as c:
        yield c


@pytest.fixture
def roles(admin):
    """A sign-in role and a request role, made as the docs say, by the owner."""
    suffix = uuid.uuid4().hex[:8]
    sign_in, request = f"castle_signin_{suffix}", f"castle_request_{suffix}"
    with owner() as o:
        for role in (sign_in, request):
            o.execute(f"CREATE ROLE {role} LOGIN")
        o.execute("SELECT castle.grant_sign_in_role(%s)", (sign_in,))
        o.execute("SELECT castle.grant_request_role(%s)", (request,))
    yield sign_in, request
    for role in (sign_in, request):
        admin.execute(f"DROP OWNED BY {role}")
        admin.execute(f"DROP ROLE {role}")


def as_role(role, **extra):
    return psycopg.connect(dsn(user=role, **extra), autocommit=True)


@pytest.fixture
def table_settings():
    """Changes castle.settings as its owner, and puts back what was there."""
    with owner() as o:
        before = o.execute("SELECT to_jsonb(s) FROM castle.settings AS s").fetchone()[0]

        def put(**values):
            for name, value in values.items():
                o.execute(f"UPDATE castle.settings SET {name} = %s", (value,))
        yield put
        o.execute("UPDATE castle.settings AS s SET (max_sessions, token_prefix, secret_size, invalid_message, "
                  "default_ttl, touch_interval, idle_timeout, rotate_grace, log_events, notify_revocations) = "
                  "(SELECT r.max_sessions, r.token_prefix, r.secret_size, r.invalid_message, r.default_ttl, "
                  "r.touch_interval, r.idle_timeout, r.rotate_grace, r.log_events, r.notify_revocations "
                  "FROM jsonb_populate_record(NULL::castle.settings, %s) AS r)", (psycopg.types.json.Jsonb(before),))


def test_installed_by_an_owner_who_is_not_a_superuser_on_a_server_without_the_library(admin):
    assert admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'castle_owner'").fetchone() == (False,)
    assert admin.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'castle'").fetchone() \
        == ("castle_owner",)
    assert admin.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'castle_sessions'") \
        .fetchone() == (0,), "the library must not be installed on this server"
    assert "SQL edition" in admin.execute("SELECT obj_description('castle'::regnamespace)").fetchone()[0]


# Every way an application role could set a castle.* value for its own calls.
WAYS = {
    "SET": lambda c, name, value: c.execute(f"SET castle.{name} = '{value}'"),
    "set_config": lambda c, name, value: c.execute("SELECT set_config(%s, %s, false)", (f"castle.{name}", value)),
}


def connect_with_options(role, name, value):
    return as_role(role, options=f"'-c castle.{name}={value}'")


@pytest.mark.parametrize("way", ["SET", "set_config", "connection options"])
def test_no_application_role_can_lift_the_session_limit(roles, way):
    for role in roles[:1]:   # only the sign-in role may create sessions
        user = f"limited-{way}"
        conn = connect_with_options(role, "max_sessions", 0) if way == "connection options" else as_role(role)
        with conn:
            if way in WAYS:
                WAYS[way](conn, "max_sessions", "0")
            tokens = [create(conn, user) for _ in range(5)]
            valid = [conn.execute("SELECT castle.is_valid(%s)", (t,)).fetchone()[0] for t in tokens]
        assert valid == [False, False, True, True, True], "castle.settings' max_sessions (3) holds"


@pytest.mark.parametrize("way", ["SET", "set_config", "connection options"])
def test_no_application_role_can_lengthen_the_grace_lift_the_idle_timeout_or_bring_back_a_prefix(
        roles, table_settings, admin, way):
    sign_in, request = roles
    table_settings(idle_timeout=3600)
    with as_role(sign_in) as c:
        rotated_away = create(c, "grace-user")
        c.execute("SELECT castle.rotate(%s)", (rotated_away,))
        idle = create(c, "idle-user")
    admin.execute("UPDATE castle.sessions SET rotated_at = now() - interval '1 minute' "
                  "WHERE user_id = 'grace-user' AND rotated_at IS NOT NULL")
    admin.execute("UPDATE castle.sessions SET created_at = now() - interval '2 hours', used_at = NULL "
                  "WHERE user_id = 'idle-user'")
    old_prefix = "old_" + rotated_away[len("oat_"):]
    for role in roles:
        for name, value in [("rotate_grace", "100000"), ("idle_timeout", "0"), ("token_prefix", "old_"),
                            ("secret_size", "22"), ("touch_interval", "0")]:
            conn = connect_with_options(role, name, value) if way == "connection options" else as_role(role)
            with conn:
                if way in WAYS:
                    WAYS[way](conn, name, value)
                checks = conn.execute("SELECT castle.is_valid(%s), castle.is_valid(%s), castle.is_valid(%s)",
                                      (rotated_away, idle, old_prefix)).fetchone()
                assert checks == (False, False, False), f"{role} changed castle.{name} by {way}"
                if role == sign_in and name == "secret_size":
                    assert len(create(conn, "short-secret")) > 100, "castle.settings' secret_size (64) holds"
    with owner() as o:
        o.execute("SELECT castle.revoke_all('grace-user'), castle.revoke_all('idle-user')")


def test_application_roles_cannot_read_or_write_the_settings_or_the_internals(roles):
    for role in roles:
        with as_role(role) as c:
            for statement in ["SELECT * FROM castle.settings", "UPDATE castle.settings SET max_sessions = 0",
                              "SELECT * FROM castle_internal.keys",
                              "SELECT castle_internal.revoke_family(1, 1)",
                              "SELECT * FROM castle.sessions"]:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(statement)


def test_a_bad_setting_is_refused_clearly_and_changes_nothing(table_settings):
    with owner() as o:
        for column, value, words in [("max_sessions", -1, "castle.max_sessions"),
                                     ("token_prefix", "a.b", "castle.token_prefix"),
                                     ("secret_size", 21, "castle.secret_size"),
                                     ("invalid_message", "", "castle.invalid_message"),
                                     ("touch_interval", -2, "castle.touch_interval")]:
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=words):
                o.execute(f"UPDATE castle.settings SET {column} = %s", (value,))
        assert o.execute("SELECT max_sessions, token_prefix, secret_size FROM castle.settings").fetchone() \
            == (3, "oat_", 64)


def test_the_owner_changes_a_setting_in_the_table_for_every_role(roles, table_settings):
    table_settings(token_prefix="app_", max_sessions=1)
    with as_role(roles[0]) as c:
        first, second = create(c, "table-user"), create(c, "table-user")
        assert second.startswith("app_")
        assert c.execute("SELECT castle.is_valid(%s), castle.is_valid(%s)", (first, second)).fetchone() \
            == (False, True)


def test_the_owners_own_session_may_override_as_with_the_extension(table_settings):
    """A role that may write castle.settings may as well SET: its session's
    castle.* values are read, so maintenance and tests read as with the
    extension."""
    with owner() as o:
        o.execute("SET castle.token_prefix = 'maint_'")
        assert create(o, "owner-user").startswith("maint_")


def test_a_binding_cannot_be_forged_nor_carried_into_another_transaction(roles):
    """castle.login's binding is a transaction-local setting any role can read
    and SET: signed, so that no value but the one login made is accepted."""
    sign_in, request = roles
    with as_role(sign_in) as c:
        alice, bob = create(c, "alice-ctx"), create(c, "bob-ctx")
    binding = "SELECT current_setting('castle_internal.binding')"
    with as_role(request) as c:
        with c.transaction():
            c.execute("SELECT castle.login(%s)", (bob,))
            bound = c.execute(binding).fetchone()[0]
            assert c.execute("SELECT castle.user_id()").fetchone() == ("bob-ctx",)
        with c.transaction():
            # the same value, in the next transaction of the same backend
            c.execute("SELECT set_config('castle_internal.binding', %s, true)", (bound,))
            assert c.execute("SELECT castle.user_id(), castle.session_id()").fetchone() == (None, None)
        with c.transaction():
            c.execute("SELECT castle.login(%s)", (alice,))
            session, _, mac = c.execute(binding).fetchone()[0].split(":")
            forged = ":".join([session, "bob-ctx".encode().hex(), mac])
            c.execute("SELECT set_config('castle_internal.binding', %s, true)", (forged,))
            assert c.execute("SELECT castle.user_id()").fetchone() == (None,), "a binding's user is signed"
        with c.transaction():
            c.execute("SELECT castle.login(%s)", (alice,))
            c.execute("SELECT castle.logout()")
            assert c.execute("SELECT castle.user_id()").fetchone() == (None,)


def reused_token(conn):
    """A token rotated away past its grace, and its family's live token."""
    old = create(conn, f"reuse-{uuid.uuid4().hex[:6]}")
    new = conn.execute("SELECT castle.rotate(%s)", (old,)).fetchone()[0]
    with owner() as o:
        o.execute("UPDATE castle.sessions SET rotated_at = now() - interval '1 hour' "
                  "WHERE id = castle.token_session_id(%s)", (old,))
    return old, new


def valid(conn, token):
    return conn.execute("SELECT castle.is_valid(%s)", (token,)).fetchone()[0]


def test_a_reuse_is_revoked_even_when_the_caller_rolls_back(admin):
    old, new = reused_token(admin)
    with psycopg.connect(dsn()) as c:
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
            c.execute("SELECT castle.authenticate(%s)", (old,))
        c.rollback()
    assert not valid(admin, new), "the family was revoked through dblink, in a transaction of its own"


@pytest.fixture
def without_dblink():
    with owner() as o:
        saved = o.execute("SELECT conninfo, dblink FROM castle_internal.autonomous").fetchone()
        o.execute("DELETE FROM castle_internal.autonomous")
        yield o, saved
        o.execute("DELETE FROM castle_internal.autonomous")
        o.execute("INSERT INTO castle_internal.autonomous (conninfo, dblink) VALUES (%s, %s)", saved)


def test_without_dblink_a_refusing_call_loses_the_revocation_and_verify_keeps_it(admin, without_dblink):
    """Documented: without dblink the family is revoked in the caller's
    transaction, which authenticate's refusal rolls back; verify and
    is_valid do not raise, so their caller's commit keeps it."""
    old, new = reused_token(admin)
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
        admin.execute("SELECT castle.authenticate(%s)", (old,))
    assert valid(admin, new), "authenticate's refusal rolled its revocation back"
    assert admin.execute("SELECT castle.verify(%s) IS NULL", (old,)).fetchone() == (True,)
    assert not valid(admin, new), "verify's revocation committed with its caller"


def test_a_broken_dblink_revokes_in_the_callers_transaction_and_logs_no_password(admin, without_dblink):
    o, (conninfo, schema) = without_dblink
    o.execute("INSERT INTO castle_internal.autonomous (conninfo, dblink) VALUES (%s, %s)",
              (conninfo.replace("password=", "password=wrong"), schema))
    old, new = reused_token(admin)
    assert admin.execute("SELECT castle.is_valid(%s)", (old,)).fetchone() == (False,)
    assert not valid(admin, new)
    log = LOG.read_text(errors="replace")
    assert "not revoked through dblink" in log
    password = conninfo.split("password=")[1].split()[0]
    assert password not in log


def test_no_token_reaches_the_server_log_with_bound_parameters(admin):
    """The edition cannot hide a statement's text from the log (the extension
    does): with bound parameters, which every driver here uses, the text holds
    $1, never the token. A reuse's LOG line proves the log is written."""
    old, new = reused_token(admin)
    bad = new[:-3] + "AAA"
    for token in (old, new, bad):
        try:
            admin.execute("SELECT castle.authenticate(%s)", (token,))
        except psycopg.errors.InvalidAuthorizationSpecification:
            pass
    time.sleep(0.2)
    log = LOG.read_text(errors="replace")
    assert "reuse of a rotated token" in log
    for token in (old, new, bad):
        assert token not in log and token.split(".")[1] not in log


# --- moving between the editions -------------------------------------------

needs_extension = pytest.mark.skipif(
    not EXTENSION_PORT, reason="needs the extension's test cluster (CASTLE_EXTENSION_PORT, scripts/managed.sh)")


def extension_dsn(db):
    return f"host=127.0.0.1 port={EXTENSION_PORT} user=postgres dbname={db}"


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def sessions_dump(port, db):
    """The sessions, their sequence and nothing else: what moves between editions."""
    return run(f"{PG_BIN}/pg_dump", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "--data-only",
               "-t", "castle.sessions", "-t", "castle.sessions_id_seq", db).stdout


@pytest.fixture
def extension_db():
    name = f"castle_move_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(extension_dsn("postgres"), autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    yield name
    with psycopg.connect(extension_dsn("postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def edition_db(admin):
    name = f"castle_move_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE DATABASE {name} OWNER castle_owner")
    run(f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-h", "127.0.0.1", "-p", PORT,
        "-U", "castle_owner", "-d", name, "-f", str(EDITION))
    yield name
    admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def sign_ins(conn, n=20):
    tokens = [create(conn, f"mover-{i % 7}", "1 day", psycopg.types.json.Jsonb({"i": i})) for i in range(n)]
    # rotated ones too: their successors and the tokens within grace move
    tokens += [conn.execute("SELECT castle.rotate(%s)", (t,)).fetchone()[0] for t in tokens[-3:]]
    return [t for t in tokens if valid(conn, t)]


@needs_extension
def test_sessions_move_from_the_sql_edition_to_the_extension_by_pg_dump(edition_db, extension_db):
    with psycopg.connect(dsn(dbname=edition_db), autocommit=True) as e:
        tokens = sign_ins(e)
        before = {t: e.execute("SELECT (castle.verify(%s)).id", (t,)).fetchone()[0] for t in tokens}
    dump = sessions_dump(PORT, edition_db)
    with psycopg.connect(extension_dsn(extension_db), autocommit=True) as x:
        x.execute("CREATE EXTENSION castle_sessions")
        x.execute("ALTER SEQUENCE castle.sessions_id_seq RESTART")
    run(f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", EXTENSION_PORT,
        "-U", "postgres", "-d", extension_db, input=dump)
    with psycopg.connect(extension_dsn(extension_db), autocommit=True) as x:
        for token, sid in before.items():
            assert x.execute("SELECT (castle.authenticate(%s)).id", (token,)).fetchone()[0] == sid
        fresh = create(x, "after-move")
        assert x.execute("SELECT castle.token_session_id(%s)", (fresh,)).fetchone()[0] > max(before.values())


@needs_extension
def test_sessions_move_from_the_extension_to_the_sql_edition_by_pg_dump(edition_db, extension_db):
    with psycopg.connect(extension_dsn(extension_db), autocommit=True) as x:
        x.execute("CREATE EXTENSION castle_sessions")
        tokens = sign_ins(x)
        before = {t: x.execute("SELECT (castle.verify(%s)).id", (t,)).fetchone()[0] for t in tokens}
    dump = sessions_dump(EXTENSION_PORT, extension_db)
    run(f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", PORT,
        "-U", "castle_owner", "-d", edition_db, input=dump)
    with psycopg.connect(dsn(dbname=edition_db), autocommit=True) as e:
        for token, sid in before.items():
            assert e.execute("SELECT (castle.authenticate(%s)).id", (token,)).fetchone()[0] == sid
        fresh = create(e, "after-move")
        assert e.execute("SELECT castle.token_session_id(%s)", (fresh,)).fetchone()[0] > max(before.values())


@needs_extension
def test_a_whole_database_moves_to_a_server_with_the_library_and_then_to_the_extension_in_place(
        edition_db, extension_db):
    """pg_dump of a database on the SQL edition, restored where the library is
    installed, then managed/to_extension.sql: tokens, settings, the roles'
    grants and a row-level security policy on castle.user_id() carry over."""
    request = f"castle_req_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(dsn(dbname=edition_db, user="castle_owner"), autocommit=True) as e:
        e.execute(f"CREATE ROLE {request} LOGIN")
        e.execute("SELECT castle.grant_request_role(%s)", (request,))
        e.execute("UPDATE castle.settings SET max_sessions = 5, idle_timeout = 7200")
        e.execute("CREATE TABLE notes (owner text, body text)")
        e.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
        e.execute("CREATE POLICY mine ON notes USING (owner = castle.user_id())")
        e.execute(f"GRANT SELECT ON notes TO {request}")
        e.execute("INSERT INTO notes VALUES ('mover-1', 'one'), ('mover-2', 'two')")
        tokens = sign_ins(e)
        before = {t: e.execute("SELECT (castle.verify(%s)).user_id", (t,)).fetchone()[0] for t in tokens}
    dump = subprocess.run([f"{PG_BIN}/pg_dump", "-h", "127.0.0.1", "-p", PORT, "-U", "postgres", "-Fc", edition_db],
                          check=True, capture_output=True).stdout
    with psycopg.connect(extension_dsn("postgres"), autocommit=True) as x:
        x.execute("SELECT 1 FROM pg_roles WHERE rolname = 'castle_owner'").fetchone() or \
            x.execute("CREATE ROLE castle_owner LOGIN CREATEROLE")
        x.execute(f"CREATE ROLE {request} LOGIN")
    try:
        subprocess.run([f"{PG_BIN}/pg_restore", "-h", "127.0.0.1", "-p", EXTENSION_PORT, "-U", "postgres",
                        "-d", extension_db, "--exit-on-error"], input=dump, check=True, capture_output=True)
        run(f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-h", "127.0.0.1", "-p", EXTENSION_PORT,
            "-U", "postgres", "-d", extension_db, "-f", str(REPO / "managed" / "to_extension.sql"))
        with psycopg.connect(extension_dsn(extension_db), autocommit=True) as x:
            assert x.execute("SELECT extversion FROM pg_extension WHERE extname = 'castle_sessions'").fetchone()
            assert x.execute("SELECT count(*) FROM pg_namespace WHERE nspname IN "
                             "('castle_internal', 'castle_sql_edition')").fetchone() == (0,)
        with psycopg.connect(extension_dsn(extension_db).replace("user=postgres", f"user={request}")) as r:
            assert r.execute("SHOW castle.max_sessions").fetchone() == ("5",)
            assert r.execute("SHOW castle.idle_timeout").fetchone() == ("2h",)
            for token, user in before.items():
                assert r.execute("SELECT (castle.authenticate(%s)).user_id", (token,)).fetchone()[0] == user
            token = next(t for t, u in before.items() if u == "mover-1")
            r.execute("SELECT castle.login(%s)", (token,))
            assert r.execute("SELECT body FROM notes").fetchall() == [("one",)], "the policy calls the extension"
            r.rollback()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                r.execute("SELECT castle.create_session('x')")
    finally:
        with psycopg.connect(extension_dsn("postgres"), autocommit=True) as x:
            x.execute(f"DROP DATABASE IF EXISTS {extension_db} WITH (FORCE)")
            x.execute(f"CREATE DATABASE {extension_db}")   # for the fixture's drop
            x.execute(f"DROP ROLE IF EXISTS {request}")
