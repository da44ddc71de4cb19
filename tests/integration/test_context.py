"""The auth context from real clients: castle.login through pgbouncer in
transaction pooling mode, and authentication on a streaming hot standby."""
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

import seed_algorithm as seed
from conftest import DB, PG_BIN, PORT, create, dsn, library_only

CLUSTERS = Path(os.environ.get("CASTLE_CLUSTER_ROOT", "/tmp/castle_sessions-clusters"))
BOUNCER_PORT = 25418
REPLICA_PORT = 25417
APP_ROLE = "castle_ctx_app"


def as_postgres(*cmd, **kw):
    return subprocess.run(["sudo", "-u", "postgres", *cmd], check=True, **kw)


def wait_for(connect, seconds=30):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return connect()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def notes():
    """A notes table under row-level security for an application role."""
    with psycopg.connect(dsn(), autocommit=True) as c:
        c.execute(f"DROP ROLE IF EXISTS {APP_ROLE}")
        c.execute(f"CREATE ROLE {APP_ROLE} LOGIN NOBYPASSRLS")
        c.execute(f"GRANT USAGE ON SCHEMA castle TO {APP_ROLE}")
        c.execute(f"GRANT EXECUTE ON ALL ROUTINES IN SCHEMA castle TO {APP_ROLE}")
        c.execute("DROP TABLE IF EXISTS notes")
        c.execute("CREATE TABLE notes (id serial PRIMARY KEY, owner_id bigint NOT NULL, body text)")
        c.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
        c.execute(f"CREATE POLICY notes_owner ON notes TO {APP_ROLE} USING (owner_id = castle.user_id()::bigint)")
        c.execute(f"GRANT SELECT ON notes TO {APP_ROLE}")
        c.execute("INSERT INTO notes (owner_id, body) SELECT u, 'note of ' || u FROM generate_series(1, 8) AS u")
        tokens = {u: create(c, u, "1 hour") for u in range(1, 9)}
    yield tokens
    with psycopg.connect(dsn(), autocommit=True) as c:
        c.execute("DROP TABLE notes")
        c.execute(f"REVOKE ALL ON ALL ROUTINES IN SCHEMA castle FROM {APP_ROLE}")
        c.execute(f"REVOKE USAGE ON SCHEMA castle FROM {APP_ROLE}")
        c.execute(f"DROP ROLE {APP_ROLE}")


@pytest.fixture(scope="module")
def pgbouncer():
    """Debian's pgbouncer in transaction pooling mode, two server connections."""
    root = CLUSTERS / "pgbouncer"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "userlist.txt").write_text(f'"postgres" ""\n"{APP_ROLE}" ""\n')
    (root / "pgbouncer.ini").write_text(f"""
[databases]
{DB} = host=127.0.0.1 port={PORT} dbname={DB}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {BOUNCER_PORT}
unix_socket_dir =
auth_type = trust
auth_file = {root}/userlist.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 100
logfile = {root}/pgbouncer.log
pidfile = {root}/pgbouncer.pid
""")
    shutil.chown(root, "postgres")
    for f in root.iterdir():
        shutil.chown(f, "postgres")
    proc = subprocess.Popen(["sudo", "-u", "postgres", "/usr/sbin/pgbouncer", str(root / "pgbouncer.ini")])
    wait_for(lambda: psycopg.connect(dsn(port=BOUNCER_PORT), autocommit=True).close())
    yield BOUNCER_PORT
    proc.terminate()
    proc.wait(10)


def test_pgbouncer_transaction_pooling_never_leaks_a_login(notes, pgbouncer):
    clients, rounds = 8, 40
    problems, backends = [], set()

    def client(user):
        token = notes[user]
        # pgbouncer 1.18 in transaction mode cannot carry server-side prepared statements
        with psycopg.connect(dsn(port=pgbouncer, user=APP_ROLE), autocommit=True, prepare_threshold=None) as c:
            for _ in range(rounds):
                with c.transaction():
                    c.execute("SELECT user_id FROM castle.login(%s)", (token,))
                    who, pid = c.execute("SELECT castle.user_id(), pg_backend_pid()").fetchone()
                    owners = [r[0] for r in c.execute("SELECT owner_id FROM notes")]
                    backends.add(pid)
                    if who != str(user) or owners != [user]:
                        problems.append((user, who, owners))
                outside = c.execute("SELECT castle.user_id(), count(*) FROM notes").fetchone()
                if outside != (None, 0):
                    problems.append((user, "outside a login transaction", outside))

    threads = [threading.Thread(target=client, args=(u,)) for u in notes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems, problems[:5]
    assert len(backends) <= 2, "all clients shared pgbouncer's two server connections"


@pytest.fixture(scope="module")
def replica():
    """A streaming hot standby of the test cluster, made with pg_basebackup."""
    root = CLUSTERS / "replica"
    if (root / "data" / "postmaster.pid").exists():
        subprocess.run(["sudo", "-u", "postgres", f"{PG_BIN}/pg_ctl", "-D", str(root / "data"), "-m", "immediate",
                        "stop"], check=False)
    shutil.rmtree(root, ignore_errors=True)
    (root / "sock").mkdir(parents=True)
    shutil.chown(root, "postgres")
    shutil.chown(root / "sock", "postgres")
    as_postgres(f"{PG_BIN}/pg_basebackup", "-h", "127.0.0.1", "-p", PORT, "-U", "postgres",
                "-D", str(root / "data"), "-R", "-X", "stream", "--checkpoint=fast")
    with open(root / "data" / "postgresql.auto.conf", "a") as conf:
        conf.write(f"port = {REPLICA_PORT}\nunix_socket_directories = '{root}/sock'\nhot_standby = on\n")
    as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-w", "start",
                stdout=subprocess.DEVNULL)
    wait_for(lambda: psycopg.connect(dsn(port=REPLICA_PORT)).close())
    yield REPLICA_PORT
    as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(root / "data"), "-m", "fast", "-w", "stop",
                stdout=subprocess.DEVNULL)


def replayed(standby, token, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = standby.execute("SELECT (castle.verify(%s)).user_id", (token,)).fetchone()
        if row[0] is not None:
            return row[0]
        time.sleep(0.1)
    return None


def test_sessions_authenticate_on_a_hot_standby_without_writing(replica):
    with psycopg.connect(dsn(), autocommit=True) as primary, \
            psycopg.connect(dsn(port=replica), autocommit=True) as standby:
        assert standby.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        token = create(primary, "replicated", "1 hour")
        assert replayed(standby, token) == "replicated", "a session created on the primary authenticates after replay"
        standby.execute("SET castle.touch_interval = 0")  # a write would be due on every call
        for _ in range(20):
            assert standby.execute("SELECT user_id FROM castle.authenticate(%s)", (token,)).fetchone()[0] == "replicated"
        with standby.transaction():
            assert standby.execute("SELECT user_id FROM castle.login(%s)", (token,)).fetchone()[0] == "replicated"
            assert standby.execute("SELECT castle.user_id()").fetchone()[0] == "replicated"
        assert standby.execute("SELECT castle.user_id()").fetchone()[0] is None
        with pytest.raises(psycopg.Error) as refused:
            standby.execute("SELECT castle.authenticate(%s)", (seed.token(seed.split(token)[0], seed.new_secret()),))
        assert refused.value.sqlstate == "28000"


@pytest.mark.parametrize("call", [
    "SELECT castle.create_session('replica-user')",
    "SELECT castle.revoke(%s)",
    "SELECT castle.rotate(%s)",
    "SELECT castle.revoke_all('replicated')",
    "SELECT castle.prune()",
])
def test_writes_on_a_standby_fail_clearly(replica, call):
    with psycopg.connect(dsn(), autocommit=True) as primary, \
            psycopg.connect(dsn(port=replica), autocommit=True) as standby:
        token = create(primary, "replicated", "1 hour")
        replayed(standby, token)
        with pytest.raises(psycopg.Error) as caught:
            standby.execute(call, (token,) if "%s" in call else None)
        assert caught.value.sqlstate == "25006"
        assert "read-only standby" in caught.value.diag.message_primary
        assert token not in str(caught.value)


def test_a_reuse_on_a_standby_is_refused_and_revoked_on_the_primary(replica):
    with psycopg.connect(dsn(), autocommit=True) as primary, \
            psycopg.connect(dsn(port=replica), autocommit=True) as standby:
        old = create(primary, "replica-reuse", "1 hour")
        old_id = primary.execute("SELECT (castle.verify(%s)).id", (old,)).fetchone()[0]
        new = primary.execute("SELECT castle.rotate(%s)", (old,)).fetchone()[0]
        primary.execute("UPDATE castle.sessions SET rotated_at = now() - interval '1 hour' WHERE id = %s",
                        (old_id,))
        replayed(standby, new)
        deadline = time.monotonic() + 30
        while standby.execute("SELECT count(*) FROM castle.sessions WHERE id = %s AND rotated_at < now() - "
                              "interval '30 minutes'", (old_id,)).fetchone()[0] == 0:
            assert time.monotonic() < deadline, "the backdated rotation was not replayed"
            time.sleep(0.1)
        with pytest.raises(psycopg.Error) as refused:
            standby.execute("SELECT castle.authenticate(%s)", (old,))
        assert refused.value.sqlstate == "28000"
        # nothing can be written on the standby: the family lives until the
        # token reaches the primary
        time.sleep(0.5)
        assert primary.execute("SELECT castle.is_valid(%s)", (new,)).fetchone()[0] is True
        assert primary.execute("SELECT castle.is_valid(%s)", (old,)).fetchone()[0] is False
        deadline = time.monotonic() + 10
        while primary.execute("SELECT castle.is_valid(%s)", (new,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the primary did not revoke the family"
            time.sleep(0.05)


@library_only("castle.stats counts in the library's shared memory")
def test_a_standbys_uses_are_recorded_once_the_session_reaches_the_primary(replica):
    """A hot standby cannot write, and has no worker: a check there records
    nothing (counted as skipped); the session's next check on the primary
    records its use, which then replays to the standby."""
    with psycopg.connect(dsn(), autocommit=True) as primary, \
            psycopg.connect(dsn(port=replica), autocommit=True) as standby:
        token = create(primary, "replica-uses", "1 hour")
        sid = seed.split(token)[0]
        replayed(standby, token)
        skipped = "SELECT touches_skipped FROM castle.stats WHERE datname = current_database()"
        before = standby.execute(skipped).fetchone()[0]
        for _ in range(5):
            standby.execute("SELECT castle.authenticate(%s)", (token,))
        assert standby.execute(skipped).fetchone()[0] - before == 5
        time.sleep(1.5)  # more than the primary's worker takes to write a use
        used = "SELECT used_at FROM castle.sessions WHERE id = %s"
        assert primary.execute(used, (sid,)).fetchone()[0] is None, "the standby's uses reached no one"
        primary.execute("SELECT castle.authenticate(%s)", (token,))
        deadline = time.monotonic() + 10
        while primary.execute(used, (sid,)).fetchone()[0] is None:
            assert time.monotonic() < deadline, "the primary did not record the use"
            time.sleep(0.05)
        while standby.execute(used, (sid,)).fetchone()[0] is None:
            assert time.monotonic() < deadline, "the recorded use did not replay"
            time.sleep(0.05)
        primary.execute("SELECT castle.revoke(%s)", (token,))
