"""With pgaudit loaded, every read and write of castle.sessions goes through
the executor, so object auditing sees sign-in, authenticate, rotate, revoke
and trim; and no token, secret or hash reaches those log lines."""
import os
import re
import time

import psycopg

import seed_algorithm

PORT = os.environ["CASTLE_AUDIT_PORT"]
LOG = os.path.join(os.environ["CASTLE_AUDIT_DIR"], "server.log")


def audit_dsn(dbname):
    return f"host=127.0.0.1 port={PORT} user=postgres dbname={dbname}"


def test_object_auditing_sees_every_access_and_no_secret():
    with psycopg.connect(audit_dsn("postgres"), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS castle_audit")
        admin.execute("CREATE DATABASE castle_audit")
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'castle_auditor'").fetchone():
            admin.execute("CREATE ROLE castle_auditor NOLOGIN")
    with psycopg.connect(audit_dsn("castle_audit"), autocommit=True) as db:
        db.execute("CREATE EXTENSION pgaudit")
        db.execute("CREATE EXTENSION castle_sessions")
        db.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON castle.sessions TO castle_auditor")
        start = os.path.getsize(LOG)
        tokens = [db.execute("SELECT castle.create_session('audited-user')").fetchone()[0] for _ in range(4)]
        assert db.execute("SELECT (castle.authenticate(%s)).user_id", (tokens[3],)).fetchone()[0] == "audited-user"
        rotated = db.execute("SELECT castle.rotate(%s)", (tokens[3],)).fetchone()[0]
        assert db.execute("SELECT castle.revoke(%s)", (rotated,)).fetchone()[0] is True
        # the first token was trimmed by the fourth sign-in
        assert db.execute("SELECT castle.is_valid(%s)", (tokens[0],)).fetchone()[0] is False
        hashes = [r[0] for r in db.execute("SELECT hash FROM castle.sessions")]
    time.sleep(0.3)
    with open(LOG, errors="replace") as f:
        f.seek(start)
        log = f.read()
    # one record per log entry: a statement's text runs over several lines
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", log)
    audit = [r for r in records if "AUDIT: OBJECT" in r and "castle.sessions" in r]
    kinds = {r.split(",")[4] for r in audit}
    assert {"SELECT", "INSERT", "UPDATE", "DELETE"} <= kinds, kinds
    # the trim (its statement's CTE; 18 logs it without its leading comment)
    assert any(",DELETE," in r and "doomed AS" in r for r in audit)
    for tok in tokens + [rotated]:
        _, secret = seed_algorithm.split(tok)
        assert tok not in log and secret not in log
        assert seed_algorithm.stored_hash(secret) not in log
    for h in hashes:
        assert h not in log
