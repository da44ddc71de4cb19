"""What a DBA and a cache hear of sessions: castle.log_events' server-log lines
(ids, never a token), NOTIFY castle_revocations after commit, and castle.stats
saying it is not collecting where the library was not preloaded."""
import json
import os
import re
import time
from pathlib import Path

import psycopg
import pytest

from conftest import create, dsn

LOG = Path(os.environ["CASTLE_CLUSTER_DIR"]) / "server.log"


def session_id(conn, token):
    return conn.execute("SELECT (castle.verify(%s)).id", (token,)).fetchone()[0]


def log_since(start, needle, seconds=10):
    """The server log written after `start`, once it holds `needle`."""
    deadline = time.monotonic() + seconds
    while True:
        with open(LOG, errors="replace") as f:
            f.seek(start)
            text = f.read()
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_log_events_names_ids_and_never_a_token(conn):
    start = LOG.stat().st_size
    conn.execute("SET castle.log_events = on")
    # the portal's bound parameters (the tokens) would come with any context line
    conn.execute("SET log_parameter_max_length_on_error = -1")
    conn.execute("SET castle.max_sessions = 2")
    tokens, ids = [], []
    for _ in range(3):  # the third trims the first
        tokens.append(create(conn, "logged", "1 hour"))
        ids.append(session_id(conn, tokens[-1]))
    rotated = conn.execute("SELECT castle.rotate(%s)", (tokens[1],)).fetchone()[0]
    rotated_id = session_id(conn, rotated)
    conn.execute("SELECT castle.revoke(%s)", (tokens[2],))
    extra = create(conn, "logged", "1 hour")
    conn.execute("SELECT castle.revoke_session(%s)", (session_id(conn, extra),))
    conn.execute("SELECT castle.revoke_all('logged')")
    dead = create(conn, "logged-dead", "1 hour")
    conn.execute("UPDATE castle.sessions SET expires_at = now() - interval '1 s' WHERE id = %s",
                 (session_id(conn, dead),))
    conn.execute("SELECT castle.prune()")
    old = create(conn, "logged-reuse", "1 hour")
    old_id = session_id(conn, old)
    conn.execute("SELECT castle.rotate(%s)", (old,))
    conn.execute("UPDATE castle.sessions SET rotated_at = now() - interval '1 hour' WHERE id = %s", (old_id,))
    conn.execute("SELECT castle.verify(%s)", (old,))
    text = log_since(start, "sessions revoked (family)")
    for line in (f'session {ids[0]} created for user "logged"',
                 f'sessions of user "logged" trimmed: {ids[0]}',
                 f'session {ids[1]} rotated to session {rotated_id} for user "logged"',
                 f"sessions revoked (revoke): {ids[2]}",
                 f"sessions revoked (revoke_session): ",
                 f'sessions of user "logged" revoked (revoke_all)',
                 "dead sessions pruned",
                 f"reuse of a rotated token: family of session {old_id} revoked",
                 "sessions revoked (family)"):
        assert line in text, line
    for token in tokens + [rotated, extra, dead, old]:
        prefix, rest = token.split(".", 1)
        assert token not in text and rest not in text
    assert not re.search(r"\b[0-9a-f]{64}\b", text), "a hash reached the server log"


def test_the_reuse_line_is_logged_with_log_events_off(conn):
    start = LOG.stat().st_size
    old = create(conn, "quiet-reuse", "1 hour")
    old_id = session_id(conn, old)
    conn.execute("SELECT castle.rotate(%s)", (old,))
    conn.execute("UPDATE castle.sessions SET rotated_at = now() - interval '1 hour' WHERE id = %s", (old_id,))
    conn.execute("SELECT castle.is_valid(%s)", (old,))
    needle = f"reuse of a rotated token: family of session {old_id} revoked"
    text = log_since(start, needle)
    assert needle in text
    assert "rotated to session" not in text  # castle.log_events is off


def notifications(listener, seconds=2.0):
    got = []
    for n in listener.notifies(timeout=seconds, stop_after=None):
        assert n.channel == "castle_revocations"
        got.append(json.loads(n.payload))
    return got


def test_revocations_are_notified_after_commit(conn):
    with psycopg.connect(dsn(), autocommit=True) as listener:
        listener.execute("LISTEN castle_revocations")
        conn.execute("SET castle.notify_revocations = on")
        conn.execute("SET castle.max_sessions = 2")
        made = []
        for _ in range(3):  # the third trims the first
            token = create(conn, "cached", "1 hour")
            made.append((token, session_id(conn, token)))
        (a, a_id), (b, b_id), (c, c_id) = made
        b2 = conn.execute("SELECT castle.rotate(%s)", (b,)).fetchone()[0]
        b2_id = session_id(conn, b2)
        conn.execute("SELECT castle.revoke(%s)", (c,))
        d = create(conn, "cached", "1 hour")
        d_id = session_id(conn, d)
        conn.execute("SELECT castle.revoke_session(%s)", (d_id,))
        conn.execute("SELECT castle.revoke_all('cached')")
        dead = create(conn, "cached-dead", "1 hour")
        dead_id = session_id(conn, dead)
        conn.execute("UPDATE castle.sessions SET expires_at = now() - interval '1 s' WHERE id = %s", (dead_id,))
        conn.execute("SELECT castle.prune()")
        old = create(conn, "cached-reuse", "1 hour")
        old_id = session_id(conn, old)
        new_id = session_id(conn, conn.execute("SELECT castle.rotate(%s)", (old,)).fetchone()[0])
        conn.execute("UPDATE castle.sessions SET rotated_at = now() - interval '1 hour' WHERE id = %s", (old_id,))
        conn.execute("SELECT castle.is_valid(%s)", (old,))  # the worker revokes, as this backend had it
        conn.execute("CREATE TEMP TABLE app_users (id bigint)")
        conn.execute("CREATE TRIGGER sign_out AFTER DELETE ON app_users FOR EACH ROW "
                     "EXECUTE FUNCTION castle.revoke_sessions_trigger('id')")
        deleted_user = session_id(conn, create(conn, "4242", "1 hour"))
        conn.execute("INSERT INTO app_users VALUES (4242)")
        conn.execute("DELETE FROM app_users")
        # a rolled-back revocation is never heard of
        with conn.transaction(force_rollback=True):
            e = create(conn, "cached-rollback", "1 hour")
            conn.execute("SELECT castle.revoke(%s)", (e,))
        got = notifications(listener)
    events = [(g["event"], g.get("sessions"), g.get("user")) for g in got]
    assert ("trim", [a_id], None) in events
    assert ("rotate", [b_id], None) in events
    assert ("revoke", [c_id], None) in events
    assert ("revoke_session", [d_id], None) in events
    revoke_all = [g for g in got if g["event"] == "revoke_all"]
    assert len(revoke_all) == 1 and revoke_all[0]["user"] == "cached"
    # the rotated-away b and its successor
    assert sorted(revoke_all[0]["sessions"]) == sorted([b_id, b2_id])
    # prune takes whatever is dead in the database, earlier tests' too
    assert any(g["event"] == "prune" and (g.get("all") or dead_id in g["sessions"]) for g in got)
    assert ("rotate", [old_id], None) in events
    assert ("family", sorted([old_id, new_id]), None) in [(e, sorted(i or []), u) for e, i, u in events]
    assert ("trigger", [deleted_user], "4242") in events
    assert len(got) == 9, got


def test_bulk_revocations_send_one_small_notification(conn):
    conn.execute("SET castle.max_sessions = 0")
    for n in range(150):
        create(conn, "bulk-user", "1 hour")
    with psycopg.connect(dsn(), autocommit=True) as listener:
        listener.execute("LISTEN castle_revocations")
        conn.execute("SET castle.notify_revocations = on")
        assert conn.execute("SELECT castle.revoke_all('bulk-user')").fetchone()[0] == 150
        got = notifications(listener)
    assert got == [{"event": "revoke_all", "user": "bulk-user", "count": 150, "all": True}]


def test_stats_say_they_are_not_collecting_without_preloading():
    port = os.environ["CASTLE_AUDIT_PORT"]  # a cluster that preloads pgaudit only
    admin = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS castle_unloaded")
        c.execute("CREATE DATABASE castle_unloaded")
    try:
        with psycopg.connect(admin.replace("dbname=postgres", "dbname=castle_unloaded"), autocommit=True) as db:
            db.execute("CREATE EXTENSION castle_sessions")
            db.execute("SELECT castle.create_session('unloaded')")
            rows = db.execute("SELECT collecting, sessions_created, authentications FROM castle.stats").fetchall()
            assert rows == [(False, None, None)]
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS castle_unloaded")
