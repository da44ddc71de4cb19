"""Reinstalling never crashes a running server.

Run by scripts/suite.sh around its own install steps: with the test cluster
running, castle_sessions preloaded and a connection holding a session, it
runs the command given (cargo pgrx test, which installs its test build into
the same PostgreSQL, then the release install), and then requires the held
connection, a new connection and the postmaster to be alive, and no backend
to have died in the server's log. On 0.5.0, whose cargo pgrx test copied over
the mapped library in place, the server crashed here.

    python reinstall_under_server.py SERVER_LOG COMMAND...
"""

import subprocess
import sys

import psycopg

log_path, command = sys.argv[1], sys.argv[2:]
with open(log_path, "rb") as log:
    log.seek(0, 2)
    log_start = log.tell()

db = "castle_reinstall"
with psycopg.connect(dbname="postgres", autocommit=True) as admin:
    admin.execute(f"DROP DATABASE IF EXISTS {db}")
    admin.execute(f"CREATE DATABASE {db}")
with psycopg.connect(dbname=db, autocommit=True) as setup:
    setup.execute("CREATE EXTENSION castle_sessions")

held = psycopg.connect(dbname=db, autocommit=True)
token = held.execute("SELECT castle.create_session(1)").fetchone()[0]
assert held.execute("SELECT castle.is_valid(%s)", (token,)).fetchone()[0] is True

subprocess.run(command, check=True)

failures = []
try:
    if held.execute("SELECT castle.is_valid(%s)", (token,)).fetchone()[0] is not True:
        failures.append("the held connection no longer authenticates its token")
except psycopg.Error as error:
    failures.append(f"the held connection died: {error}")
try:
    with psycopg.connect(dbname=db, autocommit=True) as fresh:
        second = fresh.execute("SELECT castle.create_session(2)").fetchone()[0]
        if fresh.execute("SELECT (castle.authenticate(%s)).user_id", (token,)).fetchone()[0] != "1":
            failures.append("a new connection does not authenticate the held session's token")
        if fresh.execute("SELECT castle.is_valid(%s)", (second,)).fetchone()[0] is not True:
            failures.append("a new connection's session does not authenticate")
except psycopg.Error as error:
    failures.append(f"no new connection: {error}")
with open(log_path, "rb") as log:
    log.seek(log_start)
    died = [line for line in log.read().decode(errors="replace").splitlines()
            if "terminated by signal" in line or "was terminated by" in line]
failures += [f"server log: {line}" for line in died]
if failures:
    sys.exit("reinstalling under a running server broke it:\n  " + "\n  ".join(failures))
print("reinstalled under a running, preloaded server: it is alive and serves the same sessions")
