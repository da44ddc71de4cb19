"""The example services of docs/applications.md (examples/python_service on psycopg 3,
examples/node_service on node-postgres), each started as a process and driven
over real HTTP: sign-in, the protected route under row-level security, refusals
and sign-out."""
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest

import seed_algorithm as seed
from conftest import PG_BIN, PORT, dsn

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# A database of its own: the demo's notes table and role stay apart from the
# other modules' objects in castle_py.
DB = "castle_http"
PASSWORDS = {1: "alice-demo-password", 2: "bob-demo-password"}  # examples/schema.sql
COMMANDS = {
    "python": [sys.executable, str(EXAMPLES / "python_service" / "app.py")],
    "node": ["node", str(EXAMPLES / "node_service" / "server.js")],
}
# urllib would honour http_proxy from the environment; these requests are local.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def load(sql_file):
    """Runs an examples/ file with psql, as docs/applications.md says to."""
    subprocess.run([f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", PORT,
                    "-U", "postgres", "-d", DB, "-f", str(EXAMPLES / sql_file)], check=True)


@pytest.fixture(scope="module")
def database():
    with psycopg.connect(dsn(), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DB}")
    load("schema.sql")
    yield DB
    with psycopg.connect(dsn(), autocommit=True) as c:
        c.execute(f"DROP DATABASE {DB} WITH (FORCE)")
        c.execute("DROP ROLE notes_app")
        c.execute("DROP ROLE notes_sign_in")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, token=None, body=None):
    headers = {"User-Agent": "castle-http-test"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with HTTP.open(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


@contextlib.contextmanager
def running(kind, database, log, **extra_env):
    """Starts one example service, connected as notes_app; yields its base URL."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": f"postgresql://notes_app@127.0.0.1:{PORT}/{database}",
           "SIGN_IN_DATABASE_URL": f"postgresql://notes_sign_in@127.0.0.1:{PORT}/{database}", "PORT": str(port),
           **extra_env}
    with open(log, "w") as out:
        proc = subprocess.Popen(COMMANDS[kind], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            call(base, "GET", "/notes")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{kind} service did not start:\n{log.read_text()}")
            time.sleep(0.1)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module", params=list(COMMANDS))
def service(request, database, tmp_path_factory):
    """The base URL of one example service, connected as notes_app."""
    with running(request.param, database, tmp_path_factory.mktemp(request.param) / "service.log") as base:
        yield base


def sign_in(base, user):
    status, body = call(base, "POST", "/sign-in", body={"user_id": user, "password": PASSWORDS[user]})
    assert status == 200, body
    return json.loads(body)["token"]


def own_notes(user):
    with psycopg.connect(dsn(DB)) as c:
        rows = c.execute("SELECT id, body FROM notes WHERE owner_id = %s ORDER BY id", (user,)).fetchall()
    return [{"id": i, "body": b} for i, b in rows]


def test_each_user_sees_only_own_notes(service):
    tokens = {user: sign_in(service, user) for user in PASSWORDS}
    with psycopg.connect(dsn(DB)) as c:
        data = c.execute("SELECT (castle.verify(%s)).data", (tokens[1],)).fetchone()[0]
    assert data == {"user_agent": "castle-http-test"}
    # alternating users, so the node service's pool hands each connection to
    # the other user next: a login must never outlive its request
    for _ in range(10):
        for user, token in tokens.items():
            status, body = call(service, "GET", "/notes", token)
            assert (status, json.loads(body)) == (200, own_notes(user))
    assert own_notes(1) and own_notes(2) and own_notes(1) != own_notes(2)


def test_every_refusal_is_the_same_401(service):
    token = sign_in(service, 1)
    session_id = seed.split(token)[0]
    revoked = sign_in(service, 2)
    assert call(service, "POST", "/sign-out", revoked)[0] == 204
    refusals = {
        "no token": call(service, "GET", "/notes"),
        "not a token": call(service, "GET", "/notes", "nonsense"),
        "forged secret": call(service, "GET", "/notes", seed.token(session_id, seed.new_secret())),
        "revoked session": call(service, "GET", "/notes", revoked),
        "wrong password": call(service, "POST", "/sign-in", body={"user_id": 1, "password": PASSWORDS[2]}),
        "unknown user": call(service, "POST", "/sign-in", body={"user_id": 99, "password": PASSWORDS[1]}),
        "sign-out, forged": call(service, "POST", "/sign-out", seed.token(session_id, seed.new_secret())),
        "sign-out, revoked": call(service, "POST", "/sign-out", revoked),
    }
    assert {status for status, _ in refusals.values()} == {401}, refusals
    assert {body for _, body in refusals.values()} == {b'{"error": "unauthorized"}'}, refusals
    assert call(service, "GET", "/notes", token)[0] == 200, "the forgeries did not harm the real session"


def test_sign_out_ends_only_that_session(service):
    alice, bob = sign_in(service, 1), sign_in(service, 2)
    assert call(service, "GET", "/notes", alice)[0] == 200
    assert call(service, "POST", "/sign-out", alice) == (204, b"")
    assert call(service, "GET", "/notes", alice)[0] == 401
    with psycopg.connect(dsn(DB)) as c:
        assert c.execute("SELECT (castle.verify(%s)).id", (alice,)).fetchone()[0] is None
    status, body = call(service, "GET", "/notes", bob)
    assert (status, json.loads(body)) == (200, own_notes(2))


@contextlib.contextmanager
def cached_python_service(database, log):
    """The Python service with SESSION_CACHE_SECONDS=60, once its listener
    listens; yields its base URL and a superuser's connection."""
    with psycopg.connect(dsn(DB), autocommit=True) as c:
        # Before the service connects: a database's setting applies to the
        # sessions started after it. With no sessions left from the tests
        # above, no sign-in below trims one (castle.max_sessions).
        c.execute(f"ALTER DATABASE {DB} SET castle.notify_revocations = on")
        c.execute("SELECT castle.revoke_all(1::bigint), castle.revoke_all(2::bigint)")
    try:
        with running("python", database, log, SESSION_CACHE_SECONDS="60") as base, \
                psycopg.connect(dsn(DB), autocommit=True) as admin:
            wait_for(lambda: "session cache: listening" in log.read_text(), log)
            yield base, admin
    finally:
        with psycopg.connect(dsn(DB), autocommit=True) as c:
            c.execute(f"ALTER DATABASE {DB} RESET castle.notify_revocations")


def wait_for(condition, log, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)


def me(base, token):
    status, body = call(base, "GET", "/me", token)
    return status, json.loads(body)


def revoke_unnotified(admin, session_id):
    """revoke_session with this one transaction's notifications off, as if the
    DBA had never turned castle.notify_revocations on."""
    with admin.transaction():
        admin.execute("SET LOCAL castle.notify_revocations = off")
        assert admin.execute("SELECT castle.revoke_session(%s)", (session_id,)).fetchone()[0]


def test_python_session_cache_hears_revocations(database, tmp_path):
    """GET /me from the cache: a session revoked from another connection is
    refused on the next request, by NOTIFY castle_revocations, long before
    the cache's own 60 s would have."""
    log = tmp_path / "service.log"
    with cached_python_service(database, log) as (base, admin):
        unnotified, alice, bob, leaving = sign_in(base, 1), sign_in(base, 1), sign_in(base, 2), sign_in(base, 2)
        ids = {t: admin.execute("SELECT (castle.verify(%s)).id", (t,)).fetchone()[0]
               for t in (unnotified, alice, bob, leaving)}
        for token, user in [(unnotified, "1"), (alice, "1"), (bob, "2"), (leaving, "2")]:
            assert me(base, token) == (200, {"session_id": ids[token], "user_id": user})

        # The cache answers on its own: after a revocation that notifies no
        # one, /me still believes the token, while /notes, which logs in
        # within its own transaction, refuses it.
        revoke_unnotified(admin, ids[unnotified])
        assert me(base, unnotified) == (200, {"session_id": ids[unnotified], "user_id": "1"})
        assert call(base, "GET", "/notes", unnotified)[0] == 401

        # Notified revocations, by session id and by user: refused at once,
        # allowing the notification two seconds to arrive.
        assert admin.execute("SELECT castle.revoke_session(%s)", (ids[alice],)).fetchone()[0]
        wait_for(lambda: call(base, "GET", "/me", alice)[0] == 401, log, seconds=2)
        assert admin.execute("SELECT castle.revoke_all(2::bigint, %s)", (ids[bob],)).fetchone()[0] == 1
        wait_for(lambda: call(base, "GET", "/me", leaving)[0] == 401, log, seconds=2)
        # all the user's entries went, but the session revoke_all kept still answers
        assert me(base, bob) == (200, {"session_id": ids[bob], "user_id": "2"})

        # Signing out through the service evicts its own entry at once.
        assert call(base, "POST", "/sign-out", bob) == (204, b"")
        assert call(base, "GET", "/me", bob)[0] == 401


def test_python_session_cache_believes_nothing_while_its_listener_is_away(database, tmp_path):
    """A notification missed while the listener reconnects must not leave a
    revoked session cached: losing the connection empties the cache, and
    nothing is cached until it listens again."""
    log = tmp_path / "service.log"
    with cached_python_service(database, log) as (base, admin):
        before, after = sign_in(base, 1), sign_in(base, 1)
        ids = {t: admin.execute("SELECT (castle.verify(%s)).id", (t,)).fetchone()[0] for t in (before, after)}
        assert me(base, before)[0] == 200
        listener = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND usename = 'notes_app'"
                                 " AND query IN ('LISTEN castle_revocations', 'SELECT 1')", (DB,)).fetchall()
        assert len(listener) == 1, listener
        admin.execute("SELECT pg_terminate_backend(%s)", listener[0])
        wait_for(lambda: "session cache off" in log.read_text(), log)
        revoke_unnotified(admin, ids[before])
        assert call(base, "GET", "/me", before)[0] == 401

        wait_for(lambda: log.read_text().count("session cache: listening") == 2, log)
        assert me(base, after)[0] == 200
        assert admin.execute("SELECT castle.revoke_session(%s)", (ids[after],)).fetchone()[0]
        wait_for(lambda: call(base, "GET", "/me", after)[0] == 401, log, seconds=2)


def test_an_injection_in_a_request_route_cannot_read_another_users_notes(database):
    """What a SQL injection in any route but sign-in could run, run as that
    route's role: it holds alice's token, and wants bob's notes."""
    with psycopg.connect(dsn(DB), autocommit=True) as c:
        c.execute("SET ROLE notes_sign_in")
        alice = c.execute("SELECT castle.create_session(1)").fetchone()[0]
    with psycopg.connect(dsn(DB, user="notes_app")) as app:
        for attack in ["SELECT castle.login(castle.create_session(2))",
                       "SELECT castle.rotate(%s)" % "'x'",
                       "SELECT * FROM castle.sessions_of(2)",
                       "SELECT castle.revoke_all(2)",
                       "SELECT * FROM castle.sessions",
                       "SELECT * FROM app_users",
                       "SET castle.token_prefix = 'x_'"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(attack)
            app.rollback()
        app.execute("SELECT castle.login(%s)", (alice,))
        bodies = [r[0] for r in app.execute("SELECT body FROM notes")]
        assert bodies and all(b.startswith("alice:") for b in bodies)
        # '+2' or '02' would be user 2 to a bigint cast; the policy compares text
        assert app.execute("SELECT count(*) FROM notes WHERE owner_id = 2").fetchone()[0] == 0
        app.rollback()


def test_postgrest_pre_request(database):
    """What PostgREST does per request, without PostgREST (Debian 12 does not
    package it): a transaction, request.headers set locally, the pre-request
    function, then the query, all as the anonymous role."""
    load("postgrest.sql")
    with psycopg.connect(dsn(DB), autocommit=True) as c:
        token = c.execute("SELECT castle.create_session(2::bigint, '1 hour')").fetchone()[0]
    forged = seed.token(seed.split(token)[0], seed.new_secret())

    def request(headers):
        with psycopg.connect(dsn(DB, user="notes_app"), autocommit=True) as c, c.transaction():
            c.execute("SET TRANSACTION READ ONLY")  # as PostgREST runs a GET
            c.execute("SELECT set_config('request.headers', %s, true)", (json.dumps(headers),))
            c.execute("SELECT public.castle_pre_request()")
            return [r[0] for r in c.execute("SELECT owner_id FROM notes")]

    assert set(request({"x-session-token": token})) == {2}
    assert request({}) == []
    with pytest.raises(psycopg.Error) as refused:
        request({"x-session-token": forged})
    assert refused.value.sqlstate == "28000"
