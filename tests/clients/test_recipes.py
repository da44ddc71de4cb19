"""docs/recipes.md, run as written: every code block marked `recipe=NAME` is
taken out of the page and run against the suite's cluster, directly and
through pgbouncer in transaction mode, on the demo schema of
examples/schema.sql. For each stack: a sign-in through the sign-in role; an
authenticated request through the request role returning the session with
the right types; a refused token as the stack's own error with SQLSTATE 28000
mapped to 401, and a connection error that is not; a request bound by
castle.login under row-level security that sees only its user's rows."""
import asyncio
import concurrent.futures
import datetime
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

import seed_algorithm as seed
from conftest import CLUSTER, PG_BIN, PORT, ROOT, dsn

PAGE = ROOT / "docs" / "recipes.md"
DB = "castle_recipes"
ALICE_NOTES = ["alice: buy milk", "alice: renew passport"]
HERE = Path(__file__).resolve().parent


def recipe(name):
    """The code block of docs/recipes.md marked recipe=NAME."""
    blocks = re.findall(r"^```\w+ recipe=(\S+)\n(.*?)^```$", PAGE.read_text(), re.M | re.S)
    found = [code for block, code in blocks if block == name]
    assert len(found) == 1, f"docs/recipes.md has {len(found)} blocks marked recipe={name}"
    return found[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def url(role, port=PORT):
    return f"postgresql://{role}@127.0.0.1:{port}/{DB}"


@pytest.fixture(scope="module")
def database():
    with psycopg.connect(dsn(), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DB}")
    subprocess.run([f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", PORT,
                    "-U", "postgres", "-d", DB, "-f", str(ROOT / "examples" / "schema.sql")],
                   check=True, stdout=subprocess.DEVNULL)
    yield DB
    with psycopg.connect(dsn(), autocommit=True) as c:
        c.execute(f"DROP DATABASE {DB} WITH (FORCE)")


@pytest.fixture(scope="module")
def bouncer(database):
    """Debian's pgbouncer (1.18: no prepared statements across transactions)
    in transaction mode, two server connections, in front of the database."""
    root = CLUSTER.parent / "recipes-pgbouncer"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    port = free_port()
    (root / "userlist.txt").write_text('"notes_app" ""\n"notes_sign_in" ""\n')
    (root / "pgbouncer.ini").write_text(f"""
[databases]
{DB} = host=127.0.0.1 port={PORT} dbname={DB}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {root}/userlist.txt
pool_mode = transaction
default_pool_size = 2
; PgJDBC sends extra_float_digits at startup (docs/recipes.md)
ignore_startup_parameters = extra_float_digits
max_client_conn = 100
logfile = {root}/pgbouncer.log
pidfile = {root}/pgbouncer.pid
""")
    shutil.chown(root, "postgres")
    for f in root.iterdir():
        shutil.chown(f, "postgres")
    proc = subprocess.Popen(["sudo", "-u", "postgres", "/usr/sbin/pgbouncer", str(root / "pgbouncer.ini")])
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg.connect(f"host=127.0.0.1 port={port} user=notes_app dbname={DB}").close()
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "pgbouncer did not start"
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(10)


ROUTES = ["direct", "pgbouncer"]


def environment(route, bouncer):
    port = bouncer if route == "pgbouncer" else PORT
    return {"CASTLE_SIGN_IN_URL": url("notes_sign_in", port), "CASTLE_REQUEST_URL": url("notes_app", port)}


def outages():
    """Request URLs no request can be answered through: nothing listening, and
    a role PostgreSQL refuses to log in (SQLSTATE 28000 too, but FATAL)."""
    return {"closed port": url("notes_app", free_port()), "login refused": url("castle_nobody")}


def assert_not_logged(*tokens):
    """A refused token never reaches the server log (castle's refusal logs no
    statement and no context, and the recipes bind tokens as parameters)."""
    log = (CLUSTER / "server.log").read_text(errors="replace")
    for token in tokens:
        assert token not in log, "a token reached the server log"


def load(name, env, tmp_path):
    """The recipe as a module, imported under env (its engines read it)."""
    source = tmp_path / name
    source.write_text(recipe(name))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        spec = importlib.util.spec_from_file_location(f"recipe_{name[:-3]}_{id(env)}", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def another_secret(token):
    return seed.token(seed.split(token)[0], seed.new_secret())


def check_session(session, data):
    assert isinstance(session.id, int) and session.id > 0
    assert session.user_id == "1"
    assert isinstance(session.created_at, datetime.datetime) and session.created_at.utcoffset() is not None
    assert session.expires_at - session.created_at == datetime.timedelta(days=30)
    assert session.data == data and isinstance(session.data, dict)


@pytest.mark.parametrize("route", ROUTES)
def test_sqlalchemy_with_psycopg(route, bouncer, tmp_path):
    from sqlalchemy import exc
    r = load("sqlalchemy_sync.py", environment(route, bouncer), tmp_path)
    token = r.sign_in(1, {"device": "phone", "n": 1})
    check_session(r.authenticate(token), {"device": "phone", "n": 1})

    def requests():   # past psycopg's prepare threshold (5)
        for _ in range(12):
            assert r.authenticate(token).id == seed.split(token)[0]
            assert r.my_notes(token) == ALICE_NOTES

    # three pooled connections at once on pgbouncer's two server connections:
    # a statement prepared on one would be missing (or doubled) on the other
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for done in [pool.submit(requests) for _ in range(3)]:
            done.result()
    bad = another_secret(token)
    with pytest.raises(exc.DBAPIError) as refused:
        r.authenticate(bad)
    assert refused.value.orig.sqlstate == "28000" and r.http_status(refused.value) == 401
    assert_not_logged(bad)
    for why, down_url in outages().items():
        down = load("sqlalchemy_sync.py", {**environment(route, bouncer), "CASTLE_REQUEST_URL": down_url}, tmp_path)
        with pytest.raises(exc.DBAPIError) as outage:
            down.authenticate(token)
        assert down.http_status(outage.value) == 503, why


@pytest.mark.parametrize("route", ROUTES)
def test_sqlalchemy_asyncio_with_asyncpg(route, bouncer, tmp_path):
    from sqlalchemy import exc
    r = load("sqlalchemy_async.py", environment(route, bouncer), tmp_path)
    downs = {why: load("sqlalchemy_async.py", {**environment(route, bouncer), "CASTLE_REQUEST_URL": down_url},
                       tmp_path) for why, down_url in outages().items()}
    bad = another_secret(seed.token(1, seed.new_secret()))

    async def main():
        token = await r.sign_in(1, {"device": "laptop"})
        check_session(await r.authenticate(token), {"device": "laptop"})
        for _ in range(12):
            results = await asyncio.gather(r.authenticate(token), r.my_notes(token), r.my_notes(token))
            assert results[0].id == seed.split(token)[0] and results[1] == results[2] == ALICE_NOTES
        with pytest.raises(exc.DBAPIError) as refused:
            await r.authenticate(bad)
        assert refused.value.orig.sqlstate == "28000" and r.http_status(refused.value) == 401
        for why, down in downs.items():
            with pytest.raises(Exception) as outage:
                await down.authenticate(token)
            assert down.http_status(outage.value) == 503, (why, outage.value)
        for module in (r, *downs.values()):
            await module.sign_in_engine.dispose()
            await module.request_engine.dispose()

    asyncio.run(main())
    assert_not_logged(bad)


NODE = HERE / "node"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", ["knex.mjs", "kysely.mjs", "drizzle.mjs"])
def test_node(name, route, bouncer):
    """The stack's own error: node-postgres's DatabaseError, which Drizzle wraps."""
    assert (NODE / "node_modules").exists(), "scripts/setup.sh installs tests/clients/node (npm ci)"
    build = NODE / "build"
    build.mkdir(exist_ok=True)
    # beside node_modules, so that the recipe's imports resolve
    (build / name).write_text(recipe(name))
    bad = seed.token(1, seed.new_secret())
    for why, down_url in outages().items():
        env = {**os.environ, **environment(route, bouncer), "CASTLE_DOWN_URL": down_url}
        done = subprocess.run(["node", str(NODE / "drive.mjs"), str(build / name), bad],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.splitlines()[-1])   # knex warns on stdout before
        assert out["down"] == {"status": 503}, why
    assert_not_logged(bad)
    session = out["session"]
    assert session["idType"] == "bigint" and int(session["id"]) == seed.split(out["tokenId"])[0]
    assert session["userId"] == "1" and session["createdAtIsDate"] is True
    assert session["lifetimeMs"] == 30 * 86400 * 1000
    assert session["data"] == {"device": "phone", "n": 1}
    assert out["concurrent"] == sorted([json.dumps(ALICE_NOTES, separators=(",", ":")),
                                        json.dumps(session["id"])])
    assert out["notes"] == ALICE_NOTES
    assert out["refused"] == {"status": 401, "code": "28000",
                              "type": "DrizzleQueryError" if name == "drizzle.mjs" else "DatabaseError"}


def compiled_java(tmp_path):
    classes = tmp_path / "java"
    classes.mkdir()
    (classes / "CastleJdbc.java").write_text(recipe("CastleJdbc.java"))
    subprocess.run(["javac", "-cp", JDBC_JAR, "-d", str(classes), str(classes / "CastleJdbc.java"),
                    str(HERE / "java" / "Drive.java")], check=True)
    return ["java", "-cp", f"{classes}:{JDBC_JAR}", "Drive"]


JDBC_JAR = "/usr/share/java/postgresql.jar"   # Debian's libpostgresql-jdbc-java


@pytest.mark.parametrize("route", ROUTES)
def test_java_jdbc(route, bouncer, tmp_path):
    drive = compiled_java(tmp_path)
    env = {**os.environ, **environment(route, bouncer)}
    bad = seed.token(1, seed.new_secret())
    done = subprocess.run(drive + ["check", bad], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert_not_logged(bad)
    session = out["session"]
    assert int(session["id"]) == seed.split(out["tokenId"])[0] and session["userId"] == "1"
    assert session["createdAtOffset"] == "Z" and session["lifetimeSeconds"] == 30 * 86400
    assert json.loads(session["data"]) == {"device": "phone", "n": 1}
    assert out["concurrent"] == f"{session['id']} {ALICE_NOTES}".replace("'", "")
    assert out["notes"] == "|".join(ALICE_NOTES)
    assert out["refused"] == {"status": 401, "code": "28000", "type": "org.postgresql.util.PSQLException"}
    for why, down_url in outages().items():
        env["CASTLE_REQUEST_URL"] = down_url
        down = subprocess.run(drive + ["down", out["tokenId"]], env=env, capture_output=True, text=True, timeout=120)
        assert json.loads(down.stdout)["down"]["status"] == 503, (why, down.stdout, down.stderr[-2000:])


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name, error", [("castle_pq.go", "*pq.Error"), ("castle_pgx.go", "*pgconn.PgError")])
def test_go(name, error, route, bouncer, tmp_path):
    source = tmp_path / "go" / "src" / "drive"
    source.mkdir(parents=True)
    (source / name).write_text(recipe(name))
    shutil.copy(HERE / "go" / "drive.go", source / "drive.go")
    binary = tmp_path / "drive"
    # offline, from Debian's packages: GOPATH mode over /usr/share/gocode
    build_env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{tmp_path / 'go'}:/usr/share/gocode",
                 "GOCACHE": os.environ.get("CASTLE_GOCACHE", str(tmp_path / "gocache")), "GOFLAGS": ""}
    subprocess.run(["go", "build", "-o", str(binary), "drive"], cwd=source, env=build_env, check=True)
    env = {**os.environ, **environment(route, bouncer)}
    env = {k: (v + "?sslmode=disable" if k.endswith("_URL") else v) for k, v in env.items()}  # no TLS here
    bad = seed.token(1, seed.new_secret())
    done = subprocess.run([str(binary), "check", bad], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert_not_logged(bad)
    session = out["session"]
    assert int(session["id"]) == seed.split(out["tokenId"])[0] and session["userId"] == "1"
    assert session["offset"] == 0 and session["lifetimeSeconds"] == 30 * 86400
    assert session["data"] == {"device": "phone", "n": 1}
    assert out["concurrent"] == [f"{session['id']} {'|'.join(ALICE_NOTES)}"]
    assert out["notes"] == ALICE_NOTES
    assert out["refused"] == {"status": 401, "error": error}
    for why, down_url in outages().items():
        env["CASTLE_REQUEST_URL"] = down_url + "?sslmode=disable"
        down = subprocess.run([str(binary), "down", out["tokenId"]], env=env, capture_output=True, text=True,
                              timeout=120)
        assert json.loads(down.stdout)["down"] == {"status": 503, "answered": False}, (why, down.stderr[-2000:])


def run_script(command, route, bouncer):
    """A script recipe's driver: the five points, then each outage."""
    env = {**os.environ, **environment(route, bouncer)}
    bad = seed.token(1, seed.new_secret())
    done = subprocess.run(command + ["check", bad], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert_not_logged(bad)
    out["down"] = {}
    for why, down_url in outages().items():
        down = subprocess.run(command + ["down", out["tokenId"]], env={**env, "CASTLE_REQUEST_URL": down_url},
                              capture_output=True, text=True, timeout=120)
        out["down"][why] = json.loads(down.stdout.splitlines()[-1])["down"]
    return out


@pytest.mark.parametrize("route", ROUTES)
def test_ruby_active_record(route, bouncer, tmp_path):
    (tmp_path / "castle_active_record.rb").write_text(recipe("castle_active_record.rb"))
    out = run_script(["ruby", str(HERE / "ruby" / "drive.rb"), str(tmp_path / "castle_active_record.rb")],
                     route, bouncer)
    session = out["session"]
    assert session["idClass"] == "Integer" and int(session["id"]) == seed.split(out["tokenId"])[0]
    assert session["userId"] == "1" and session["createdAtClass"] == "Time" and session["utcOffset"] == 0
    assert session["lifetimeSeconds"] == 30 * 86400 and session["data"] == {"device": "phone", "n": 1}
    assert out["concurrent"] == [f"{session['id']} {'|'.join(ALICE_NOTES)}"]
    assert out["notes"] == ALICE_NOTES
    assert out["refused"] == {"status": 401, "error": "ActiveRecord::StatementInvalid",
                              "cause": "PG::InvalidAuthorizationSpecification"}
    assert all(d["status"] == 503 for d in out["down"].values()), out["down"]


@pytest.mark.parametrize("route", ROUTES)
def test_php_pdo(route, bouncer, tmp_path):
    (tmp_path / "castle_pdo.php").write_text(recipe("castle_pdo.php"))
    out = run_script(["php", str(HERE / "php" / "drive.php"), str(tmp_path / "castle_pdo.php")], route, bouncer)
    session = out["session"]
    assert session["idType"] == "int" and int(session["id"]) == seed.split(out["tokenId"])[0]
    assert session["userId"] == "1" and session["createdAtClass"] == "DateTimeImmutable" and session["offset"] == 0
    assert session["lifetimeSeconds"] == 30 * 86400 and session["data"] == {"device": "phone", "n": 1}
    assert out["concurrent"] == [f"{session['id']} {'|'.join(ALICE_NOTES)} {session['id']}"]
    assert out["notes"] == ALICE_NOTES
    assert out["refused"] == {"status": 401, "sqlstate": "28000", "error": "PDOException"}
    assert all(d["status"] == 503 for d in out["down"].values()), out["down"]
    # three PHP processes at once, on pgbouncer's two server connections
    command = ["php", str(HERE / "php" / "drive.php"), str(tmp_path / "castle_pdo.php"), "loop", out["tokenId"]]
    env = {**os.environ, **environment(route, bouncer)}
    loops = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for loop in loops:
        stdout, stderr = loop.communicate(timeout=120)
        assert loop.returncode == 0, stderr[-2000:]
        assert json.loads(stdout)["seen"] == [f"{session['id']} {'|'.join(ALICE_NOTES)}"]


DJANGO_DRIVER = """
import json, os, sys
import django
from django.test import Client
from django.test.utils import setup_test_environment
os.environ["DJANGO_SETTINGS_MODULE"] = "castle_django"
django.setup()
setup_test_environment()
client = Client()
out = {}
wrong = client.post("/sign-in/1", data=json.dumps({"password": "bob-demo-password"}),
                    content_type="application/json")
out["wrong_password"] = wrong.status_code
token = json.loads(client.post("/sign-in/1", data=json.dumps({"password": "alice-demo-password",
                                                              "data": {"device": "tablet"}}),
                               content_type="application/json").content)["token"]
out["token"] = token
# three threads (three connections) at once on pgbouncer's two server connections
from concurrent.futures import ThreadPoolExecutor
def requests():
    return [Client().get(path, HTTP_AUTHORIZATION=f"Bearer {token}") for _ in range(12) for path in ("/me", "/notes")]
with ThreadPoolExecutor(3) as pool:
    answers = sum(pool.map(lambda _: requests(), range(3)), [])
out["me"] = sorted(set(a.status_code for a in answers))
out["session"] = json.loads(client.get("/me", HTTP_AUTHORIZATION=f"Bearer {token}").content)
notes = client.get("/notes", HTTP_AUTHORIZATION=f"Bearer {token}")
out["notes"] = [notes.status_code, json.loads(notes.content)]
refused = client.get("/me", HTTP_AUTHORIZATION="Bearer " + sys.argv[1])
out["refused"] = [refused.status_code, refused.content.decode()]
out["refused_notes"] = client.get("/notes", HTTP_AUTHORIZATION="Bearer " + sys.argv[1]).status_code
print(json.dumps(out))
"""


@pytest.mark.parametrize("route", ROUTES)
def test_django(route, bouncer, tmp_path):
    (tmp_path / "castle_django.py").write_text(recipe("castle_django.py"))
    (tmp_path / "drive.py").write_text(DJANGO_DRIVER)
    env = {**os.environ, **environment(route, bouncer), "PYTHONPATH": str(tmp_path)}
    bad = seed.token(1, seed.new_secret())
    done = subprocess.run([sys.executable, str(tmp_path / "drive.py"), bad], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["wrong_password"] == 401
    assert out["me"] == [200]
    session = out["session"]
    assert session["id_type"] == "int" and session["user_id"] == "1"
    assert session["created_at_tz"] in ("UTC", "zoneinfo.ZoneInfo(key='UTC')") or "UTC" in session["created_at_tz"]
    assert session["data_type"] == "dict" and session["data"] == {"device": "tablet"}
    assert out["notes"] == [200, {"notes": ALICE_NOTES}]
    assert out["refused"][0] == 401, "the middleware's castle.authenticate"
    assert out["refused_notes"] == 401, "the view's castle.login"
    assert_not_logged(bad)
    # the database down, or refusing the login: Django's 500, not a 401
    (tmp_path / "down.py").write_text("""
import os, sys
import django
from django.test import Client
from django.test.utils import setup_test_environment
os.environ["DJANGO_SETTINGS_MODULE"] = "castle_django"
django.setup()
setup_test_environment()
print(Client(raise_request_exception=False).get("/me", HTTP_AUTHORIZATION="Bearer " + sys.argv[1]).status_code)
""")
    for why, down_url in outages().items():
        down = subprocess.run([sys.executable, str(tmp_path / "down.py"), out["token"]],
                              env={**env, "CASTLE_REQUEST_URL": down_url}, capture_output=True, text=True,
                              timeout=120)
        assert down.stdout.strip() == "500", (why, down.stdout, down.stderr[-2000:])


def test_stored_procedures(database):
    subprocess.run([f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", PORT,
                    "-U", "postgres", "-d", DB], input=recipe("stored_procedures.sql"), text=True, check=True,
                   stdout=subprocess.DEVNULL)
    with psycopg.connect(dsn(DB), autocommit=True) as admin:
        admin.execute("INSERT INTO app_credentials VALUES (1, crypt('alice-pw', gen_salt('bf', 4))),"
                      " (2, crypt('bob-pw', gen_salt('bf', 4)))")
        owners = admin.execute("""SELECT proname, proowner::regrole::text, prosecdef, proconfig FROM pg_proc
                                   WHERE proname IN ('app_sign_in', 'app_password_changed') ORDER BY 1""").fetchall()
        assert [o[:3] for o in owners] == [("app_password_changed", "notes_sign_in", True),
                                           ("app_sign_in", "notes_sign_in", True)]
        assert all(o[3] == ["search_path=pg_catalog, pg_temp"] for o in owners), owners
        assert admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'notes_sign_in'").fetchone()[0] is False
    with psycopg.connect(dsn(DB, user="notes_sign_in"), autocommit=True) as sign_in:
        alice = sign_in.execute("SELECT app_sign_in(1, 'alice-pw')").fetchone()[0]
        assert sign_in.execute("SELECT app_sign_in(1, 'wrong')").fetchone()[0] is None
        assert sign_in.execute("SELECT app_sign_in(99, 'alice-pw')").fetchone()[0] is None, "an unknown user"
        bob = sign_in.execute("SELECT app_sign_in(2, 'bob-pw')").fetchone()[0]
        # a temporary table of the caller's, named like the app's, is never read
        sign_in.execute("CREATE TEMP TABLE app_credentials AS"
                        " SELECT 2::bigint AS user_id, crypt('x', gen_salt('bf', 4)) AS password")
        assert sign_in.execute("SELECT app_sign_in(2, 'x')").fetchone()[0] is None
    with psycopg.connect(dsn(DB, user="notes_app"), autocommit=True) as app:
        assert app.execute("SELECT user_id, data FROM castle.authenticate(%s)", (alice,)).fetchone() \
            == ("1", {"via": "app_sign_in"})
        for forbidden in ("SELECT app_sign_in(1, 'alice-pw')", "SELECT castle.create_session(1)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(forbidden)
        assert app.execute("SELECT id, name FROM my_account").fetchall() == []
        assert app.execute("SELECT id, name FROM app_users").fetchall() == [], "the policy, without castle.login"
        with app.transaction():
            app.execute("SELECT FROM castle.login(%s)", (alice,))
            assert app.execute("SELECT id, name FROM my_account").fetchall() == [(1, "alice")]
            assert app.execute("SELECT id, name FROM app_users").fetchall() == [(1, "alice")]
            assert [b for (b,) in app.execute("SELECT body FROM notes ORDER BY id")] == ALICE_NOTES
    with psycopg.connect(dsn(DB, user="notes_sign_in"), autocommit=True) as sign_in:
        sign_in.execute("UPDATE app_credentials SET password = crypt('new-pw', gen_salt('bf', 4)) WHERE user_id = 1")
        assert sign_in.execute("SELECT castle.is_valid(%s), castle.is_valid(%s)", (alice, bob)).fetchone() \
            == (False, True), "a password change signs that user out everywhere, and no one else"
