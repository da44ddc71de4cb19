"""pg_upgrade from PostgreSQL 15 to 18 with sessions in the database.

Every token that authenticated before authenticates after, as the same user
and session; every token refused before is refused after; and this holds
without `ALTER EXTENSION castle_sessions UPDATE`. scripts/test.sh runs it
after the 15 and 18 passes, which installed castle_sessions into both
servers (CASTLE_OLD_BIN, CASTLE_NEW_BIN): the assert-enabled 15.18 and 18.6.
"""
import os
import re
import shutil
import subprocess
import time
import uuid

import psycopg
import pytest

OLD_BIN = os.environ["CASTLE_OLD_BIN"]
NEW_BIN = os.environ["CASTLE_NEW_BIN"]
ROOT = os.path.join(os.environ["CASTLE_CLUSTER_ROOT"], "pg_upgrade")
OLD_PORT, NEW_PORT = 25421, 25422
DB = "castle_upgrade"


def as_postgres(*args, cwd=None):
    # pg_upgrade says why it failed on stdout
    subprocess.run(["sudo", "-u", "postgres", *args], check=True, cwd=cwd,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def version_of(bin_dir):
    out = subprocess.run([f"{bin_dir}/pg_config", "--version"], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[1].split(".")[0])


def initdb(bin_dir, name, port):
    data = os.path.join(ROOT, name)
    args = [f"{bin_dir}/initdb", "-D", data, "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C"]
    if version_of(bin_dir) >= 18:
        # 18 turns checksums on by default; pg_upgrade needs them as the old cluster has them
        args.append("--no-data-checksums")
    as_postgres(*args)
    with open(os.path.join(data, "postgresql.conf"), "a") as conf:
        conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
                   f"unix_socket_directories = '{ROOT}'\nfsync = off\n")
    return data


def pg_ctl(bin_dir, data, action):
    as_postgres(f"{bin_dir}/pg_ctl", "-D", data, "-l", f"{data}.log", "-w", "-m", "fast", action)


def connect(port, db=DB):
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=db, autocommit=True)


def answers(conn, tokens):
    """What verify and authenticate say of each token: (user_id, id) or None."""
    seen = []
    for token in tokens:
        verified = conn.execute("SELECT (v).user_id, (v).id FROM castle.verify(%s) v", (token,)).fetchone()
        try:
            row = conn.execute("SELECT user_id, id FROM castle.authenticate(%s)", (token,)).fetchone()
        except psycopg.errors.InvalidAuthorizationSpecification:
            row = None
        assert (verified if verified[1] is not None else None) == row, token[:8]
        seen.append(row)
    return seen


@pytest.fixture
def clusters():
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    shutil.chown(ROOT, "postgres", "postgres")
    made = []
    yield made
    for bin_dir, data in made:
        subprocess.run(["sudo", "-u", "postgres", f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                       capture_output=True)
    shutil.rmtree(ROOT, ignore_errors=True)


def test_tokens_survive_pg_upgrade_from_15_to_18(clusters):
    assert version_of(OLD_BIN) == 15 and version_of(NEW_BIN) == 18
    old = initdb(OLD_BIN, "old", OLD_PORT)
    pg_ctl(OLD_BIN, old, "start")
    clusters.append((OLD_BIN, old))
    with connect(OLD_PORT, "postgres") as conn:
        conn.execute(f"CREATE DATABASE {DB}")
    with connect(OLD_PORT) as conn:
        conn.execute("CREATE EXTENSION castle_sessions")
        conn.execute("ALTER DATABASE castle_upgrade SET castle.max_sessions = 3")
        # a grace longer than the upgrade, so the rotated token means the same after it
        conn.execute("ALTER DATABASE castle_upgrade SET castle.rotate_grace = '1h'")
        tokens = []
        for n in range(400):
            user = f"user-{n % 120}"  # some past max_sessions, so trimmed
            if n % 5 == 0:
                tokens.append(conn.execute("SELECT castle.create_session(%s)", (user,)).fetchone()[0])
            else:
                tokens.append(conn.execute(
                    "SELECT castle.create_session(%s, '1 hour', %s::jsonb)", (user, f'{{"n": {n}}}')).fetchone()[0])
        tokens.append(conn.execute("SELECT castle.create_session(%s::bigint, '10 minutes')", (42,)).fetchone()[0])
        tokens.append(conn.execute("SELECT castle.create_session(%s::uuid, '10 minutes')", (uuid.uuid4(),)).fetchone()[0])
        # rotated away: within its grace it stands for its successor, before and after;
        # refused before, so refused after: revoked, expired, forged
        # (tokens 200 and 201 belong to users 80 and 81, who have three sessions: live)
        rotated_away = tokens[-1]
        tokens.append(conn.execute("SELECT castle.rotate(%s)", (tokens[-1],)).fetchone()[0])
        assert conn.execute("SELECT castle.revoke(%s)", (tokens[200],)).fetchone()[0] is True
        tokens.append(conn.execute("SELECT castle.create_session('expired', '1 second')").fetchone()[0])
        live = tokens[201]
        tokens.append(live[:-2] + ("AA" if not live.endswith("AA") else "BB"))  # forged
        conn.execute("SELECT pg_sleep(1.1)")
        before = answers(conn, tokens)
        sessions_before = conn.execute("SELECT count(*) FROM castle.sessions").fetchone()[0]
        version_before = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'castle_sessions'").fetchone()[0]
    refused = sum(1 for answer in before if answer is None)
    # users 0-39 signed in four times, so trimmed once each; then revoked, expired, forged
    assert refused == 40 + 3, refused
    assert sum(1 for answer in before if answer is not None) >= 120
    pg_ctl(OLD_BIN, old, "stop")
    clusters.clear()

    new = initdb(NEW_BIN, "new", NEW_PORT)
    try:
        as_postgres(f"{NEW_BIN}/pg_upgrade", "-b", OLD_BIN, "-B", NEW_BIN, "-d", old, "-D", new,
                    "-p", str(OLD_PORT), "-P", str(NEW_PORT), "-U", "postgres", cwd=ROOT)
    except subprocess.CalledProcessError as failed:
        said = failed.stdout.decode()
        # the log it names holds the cause
        named = re.findall(r'"([^"]+\.log)"', said)
        logs = "".join(open(log, errors="replace").read()[-2500:] for log in named if os.path.exists(log))
        pytest.fail(f"pg_upgrade failed: {said[-800:]}\n{logs}")
    pg_ctl(NEW_BIN, new, "start")
    clusters.append((NEW_BIN, new))
    with connect(NEW_PORT) as conn:
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("18")
        # no ALTER EXTENSION UPDATE: the same version, answering for the same tokens
        assert conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'castle_sessions'").fetchone()[0] == version_before
        assert conn.execute("SELECT count(*) FROM castle.sessions").fetchone()[0] == sessions_before
        assert answers(conn, tokens) == before
        # and the upgraded database goes on: sign-in, trimming to the limit it kept, sign-out
        fresh = [conn.execute("SELECT castle.create_session('user-1', '1 minute')").fetchone()[0] for _ in range(4)]
        assert conn.execute("SELECT count(*) FROM castle.sessions WHERE user_id = 'user-1'").fetchone()[0] == 3
        assert conn.execute("SELECT user_id FROM castle.authenticate(%s)", (fresh[-1],)).fetchone()[0] == "user-1"
        assert conn.execute("SELECT castle.revoke(%s)", (fresh[-1],)).fetchone()[0] is True
        assert conn.execute("SELECT castle.is_valid(%s)", (fresh[-1],)).fetchone()[0] is False
        # a reuse after the grace revokes the family, by the worker, on the new major
        successor = tokens[tokens.index(rotated_away) + 1]
        conn.execute("UPDATE castle.sessions SET rotated_at = now() - interval '2 hours' "
                     "WHERE rotated_at IS NOT NULL")
        assert conn.execute("SELECT castle.is_valid(%s)", (rotated_away,)).fetchone()[0] is False
        for _ in range(200):
            if not conn.execute("SELECT castle.is_valid(%s)", (successor,)).fetchone()[0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the reuse did not revoke the successor")
