"""Rotation from real clients: requests in flight with the old token survive a
rotation, and a reuse after the grace revokes the family without telling the
caller anything a bad token would not."""
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from conftest import PG_BIN, create, dsn, library_only

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import refusal_timing  # noqa: E402 - bench/, beside the tests

NO_WORKERS_PORT = 25424


def session_id(conn, token):
    return conn.execute("SELECT (castle.verify(%s)).id", (token,)).fetchone()[0]


def backdate_rotation(conn, token_id):
    conn.execute("UPDATE castle.sessions SET rotated_at = now() - interval '1 hour' WHERE id = %s", (token_id,))


def live_rows(conn, user):
    """Sessions of the user not rotated away: tokens that are not a copy."""
    return conn.execute("SELECT count(*) FROM castle.sessions WHERE user_id = %s AND rotated_at IS NULL",
                        (user,)).fetchone()[0]


def wait_revoked(conn, token, seconds=10):
    deadline = time.monotonic() + seconds
    while conn.execute("SELECT castle.is_valid(%s)", (token,)).fetchone()[0]:
        assert time.monotonic() < deadline, "the family was not revoked"
        time.sleep(0.05)


def test_requests_in_flight_with_the_old_token_survive_a_rotation(conn):
    old = create(conn, "racer", "1 hour", '{"device": "browser"}')
    failures, answers, stop = [], [], threading.Event()

    def request_loop():
        with psycopg.connect(dsn(), autocommit=True) as c:
            while not stop.is_set():
                try:
                    answers.append(c.execute("SELECT id, user_id FROM castle.authenticate(%s)", (old,)).fetchone())
                except psycopg.Error as e:
                    failures.append(e)

    threads = [threading.Thread(target=request_loop) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    # two tabs refresh at once with the same old token: both get a working token
    with psycopg.connect(dsn(), autocommit=True) as a, psycopg.connect(dsn(), autocommit=True) as b:
        new = [None, None]
        def refresh(i, c):
            new[i] = c.execute("SELECT castle.rotate(%s)", (old,)).fetchone()[0]
        racers = [threading.Thread(target=refresh, args=(0, a)), threading.Thread(target=refresh, args=(1, b))]
        for r in racers:
            r.start()
        for r in racers:
            r.join()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert all(user == "racer" for _, user in answers) and len(answers) > 20
    # one successor: both tabs get the same token, which works
    assert None not in new and new[0] == new[1]
    assert conn.execute("SELECT (castle.verify(%s)).user_id", (new[0],)).fetchone()[0] == "racer"
    # the old token now stands for it
    assert session_id(conn, old) == session_id(conn, new[0])
    assert live_rows(conn, "racer") == 1


def test_after_the_grace_a_reuse_revokes_the_family(conn):
    old = create(conn, "victim", "1 hour")
    old_id = session_id(conn, old)
    new = conn.execute("SELECT castle.rotate(%s)", (old,)).fetchone()[0]
    newer = conn.execute("SELECT castle.rotate(%s)", (new,)).fetchone()[0]
    other_device = create(conn, "victim", "1 hour")
    backdate_rotation(conn, old_id)
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
        conn.execute("SELECT castle.authenticate(%s)", (old,))
    # a refusal raised rolls back the caller's transaction; the worker's does not
    wait_revoked(conn, newer)
    assert conn.execute("SELECT castle.is_valid(%s)", (new,)).fetchone()[0] is False
    assert conn.execute("SELECT count(*) FROM castle.sessions WHERE id = %s OR family_id = %s",
                        (old_id, old_id)).fetchone()[0] == 0
    # another sign-in of the same user is another family
    assert conn.execute("SELECT castle.is_valid(%s)", (other_device,)).fetchone()[0] is True


def refusal(conn, token):
    try:
        conn.execute("SELECT castle.authenticate(%s)", (token,))
    except psycopg.Error as e:
        return e.sqlstate, e.diag.message_primary, e.diag.message_detail, e.diag.message_hint, e.diag.context
    raise AssertionError("not refused")


def reused_token(conn, user):
    """(a token rotated away an hour ago, its successor): presenting the first is a reuse."""
    old = create(conn, user, "1 hour")
    old_id = session_id(conn, old)  # before the rotation: after it, the successor's
    new = conn.execute("SELECT castle.rotate(%s)", (old,)).fetchone()[0]
    backdate_rotation(conn, old_id)
    return old, new


def wait_family_revoked_and_workers_gone(conn, user, seconds=20):
    deadline = time.monotonic() + seconds
    while conn.execute("""
            SELECT (SELECT count(*) FROM castle.sessions WHERE user_id = %s)
                 + (SELECT count(*) FROM pg_stat_activity
                     WHERE backend_type = 'castle_sessions worker')""", (user,)).fetchone()[0]:
        assert time.monotonic() < deadline, f"family of {user} not revoked"
        conn.execute("SELECT castle.is_valid(NULL)")  # a check: starts what is owed
        time.sleep(0.02)


def test_a_reuse_looks_like_any_bad_token(conn):
    old = reused_token(conn, "reused-0")[0]
    live = create(conn, "reused-live", "1 hour")
    wrong_secret = live[:-4] + ("AAAA" if not live.endswith("AAAA") else "BBBB")
    revoked = create(conn, "reused-revoked", "1 hour")
    conn.execute("SELECT castle.revoke(%s)", (revoked,))
    # the same error, field for field
    assert refusal(conn, old) == refusal(conn, wrong_secret) == refusal(conn, revoked)
    wait_family_revoked_and_workers_gone(conn, "reused-0")


@library_only("the SQL edition revokes a reuse's family through a dblink connection within the call, which takes milliseconds (docs/managed.md)")
def test_a_reuse_takes_as_long_as_any_other_refusal(conn):
    """bench/refusal_timing.py's method (docs/security.md, "Timing of
    refusals"), in one run: reuses, wrong secrets, unknown ids and expired
    sessions timed in interleaved rounds on one connection. On 0.5.0 a reuse
    started a worker before returning: 1.9x the others, told apart by a
    one-sample classifier 66-74% of the time."""
    rows, ratio, accuracy = refusal_timing.report(refusal_timing.measure(dsn(), 150))
    shown = ", ".join(f"{cause} {median:.3f} ms" for cause, (median, _) in rows.items())
    assert ratio < 1.3, f"a reuse takes {ratio:.2f}x other refusals ({shown})"
    assert accuracy < 0.7, f"a classifier tells a reuse apart {accuracy:.0%} of the time ({shown})"


def test_forty_reuses_at_once_revoke_forty_families(conn):
    """Forty reuses back to back may find every worker slot taken: the backend
    starts the rest at its next check."""
    families = [reused_token(conn, f"burst-{n}")[0] for n in range(40)]
    for token in families:
        assert refusal(conn, token)[0] == "28000"
    for n in range(40):
        wait_family_revoked_and_workers_gone(conn, f"burst-{n}")


def test_verify_and_revoke_of_a_reuse_revoke_the_family_too(conn):
    for call in ("SELECT (castle.verify(%s)).id", "SELECT castle.revoke(%s)", "SELECT castle.is_valid(%s)"):
        old, new = reused_token(conn, "reused-by-verify")
        answer = conn.execute(call, (old,)).fetchone()[0]
        assert answer in (None, False), (call, answer)
        wait_revoked(conn, new)


@library_only('background workers need the library')
def test_without_a_free_worker_slot_the_caller_still_sees_only_a_refusal():
    """max_worker_processes = 0: no worker can start. The reuse is refused as
    ever, nothing is written in the caller's transaction (which may be
    read-only), and the log says the family waits for a worker."""
    root = Path(os.environ["CASTLE_CLUSTER_ROOT"]) / "noworkers"  # a path postgres can reach
    shutil.rmtree(root, ignore_errors=True)
    (root / "sock").mkdir(parents=True)
    shutil.chown(root, "postgres")
    shutil.chown(root / "sock", "postgres")
    def as_postgres(*cmd):
        subprocess.run(["sudo", "-u", "postgres", *cmd], check=True, stdout=subprocess.DEVNULL)
    as_postgres(f"{PG_BIN}/initdb", "-D", str(root / "data"), "-U", "postgres", "--auth=trust")
    with open(root / "data" / "postgresql.conf", "a") as conf:
        conf.write(f"port = {NO_WORKERS_PORT}\nlisten_addresses = '127.0.0.1'\n"
                   f"unix_socket_directories = '{root}/sock'\nmax_worker_processes = 0\n")
    as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-w", "start")
    try:
        with psycopg.connect(dsn(dbname="postgres", port=NO_WORKERS_PORT), autocommit=True) as c:
            c.execute("CREATE EXTENSION castle_sessions")
            old = create(c, "no-worker", "1 hour")
            old_id = session_id(c, old)
            new = c.execute("SELECT castle.rotate(%s)", (old,)).fetchone()[0]
            backdate_rotation(c, old_id)
            with c.transaction():
                c.execute("SET TRANSACTION READ ONLY")
                assert c.execute("SELECT castle.verify(%s) IS NULL", (old,)).fetchone()[0] is True
            assert refusal(c, old)[0] == "28000"
            # nothing revoked it, and the log says why
            assert c.execute("SELECT castle.is_valid(%s)", (new,)).fetchone()[0] is True
        log = (root / "server.log").read_text(errors="replace")
        assert "no background worker free (max_worker_processes)" in log
        assert old not in log and old.split(".", 1)[1] not in log
    finally:
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(root / "data"), "-m", "fast", "-w", "stop")


# A thief holds a copy of the victim's token T0 (issue #19, item 3). On 0.5.0
# each rotation of T0 within its grace started a live branch of the family
# that outlived the grace, revoke_other_sessions and the password-change
# recipe; one token rotated 603 times left 604 live sessions.

def test_a_thief_rotating_a_copy_within_the_grace_gets_the_victims_successor(conn):
    t0 = create(conn, "thief-victim", "1 hour")
    t1 = conn.execute("SELECT castle.rotate(%s)", (t0,)).fetchone()[0]
    # the thief sees verify(T0) change and rotates T0, again and again
    stolen = {conn.execute("SELECT castle.rotate(%s)", (t0,)).fetchone()[0] for _ in range(200)}
    assert stolen == {t1}
    assert live_rows(conn, "thief-victim") == 1
    assert conn.execute("SELECT count(*) FROM castle.sessions WHERE user_id = 'thief-victim'").fetchone()[0] == 2
    # once the grace ends, T0 is a reuse; T1 was never a branch of the thief's
    backdate_rotation(conn, conn.execute("SELECT min(id) FROM castle.sessions WHERE user_id = 'thief-victim'"
                                         ).fetchone()[0])
    assert conn.execute("SELECT castle.is_valid(%s)", (t0,)).fetchone()[0] is False
    wait_revoked(conn, t1)
    assert conn.execute("SELECT count(*) FROM castle.sessions WHERE user_id = 'thief-victim'").fetchone()[0] == 0


def test_a_copy_follows_only_to_the_familys_newest_and_the_family_stays_small(conn):
    t0 = create(conn, "chain", "1 hour")
    t1 = conn.execute("SELECT castle.rotate(%s)", (t0,)).fetchone()[0]
    t2 = conn.execute("SELECT castle.rotate(%s)", (t1,)).fetchone()[0]
    assert conn.execute("SELECT castle.rotate(%s)", (t0,)).fetchone()[0] == t2
    assert conn.execute("SELECT castle.rotate(%s)", (t1,)).fetchone()[0] == t2
    # refreshing the newest over and over: one live token; every copy of the
    # last hour remembered (at most 60 of them: more revokes the family)
    newest = t2
    for _ in range(30):
        newest = conn.execute("SELECT castle.rotate(%s)", (newest,)).fetchone()[0]
    assert live_rows(conn, "chain") == 1
    assert conn.execute("SELECT count(*) FROM castle.sessions WHERE user_id = 'chain'").fetchone()[0] == 33
    assert conn.execute("SELECT count(*) FROM castle.sessions_of('chain')").fetchone()[0] == 1


def test_sign_out_everywhere_else_leaves_a_thiefs_copy_nothing(conn):
    t0 = create(conn, "else-victim", "1 hour")
    t1 = conn.execute("SELECT castle.rotate(%s)", (t0,)).fetchone()[0]
    # the victim, on T1, signs out every other device; the thief holds T0,
    # still within its grace
    with conn.transaction():
        conn.execute("SELECT castle.login(%s)", (t1,))
        conn.execute("SELECT castle.revoke_other_sessions()")
    # T0 can no longer follow the family: it is a reuse at once
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
        conn.execute("SELECT castle.rotate(%s)", (t0,))
    assert conn.execute("SELECT castle.is_valid(%s)", (t0,)).fetchone()[0] is False
    # and, being a reuse, it revoked the family: the thief has nothing left
    wait_revoked(conn, t1)


def test_the_password_change_recipe_leaves_a_thiefs_copy_nothing(conn):
    t0 = create(conn, "pw-victim", "1 hour")
    t1 = conn.execute("SELECT castle.rotate(%s)", (t0,)).fetchone()[0]
    other_device = create(conn, "pw-victim", "1 hour")
    # the recipe (docs/security.md): rotate the device that changed the
    # password, then revoke every other device and every older token
    t2 = conn.execute("SELECT castle.rotate(%s)", (t1,)).fetchone()[0]
    assert conn.execute("SELECT castle.revoke_all('pw-victim'::text, (castle.verify(%s)).id)",
                        (t2,)).fetchone()[0] == 1
    assert conn.execute("SELECT castle.is_valid(%s)", (other_device,)).fetchone()[0] is False
    assert conn.execute("SELECT castle.is_valid(%s)", (t2,)).fetchone()[0] is True
    # the thief's T0 and T1, both within their grace before, now refuse and follow nowhere
    for copy in (t0, t1):
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
            conn.execute("SELECT castle.rotate(%s)", (copy,))


def test_revoke_all_ends_only_the_spared_users_graces(conn):
    """except_session names another user's session: that family's copies keep their grace."""
    old, = [create(conn, "grace-owner", "1 hour")]
    conn.execute("SELECT castle.rotate(%s)", (old,))
    stranger = create(conn, "grace-stranger", "1 hour")
    conn.execute("SELECT castle.revoke_all('grace-stranger'::text, (castle.verify(%s)).id)", (old,))
    assert conn.execute("SELECT castle.is_valid(%s)", (old,)).fetchone()[0] is True
    assert conn.execute("SELECT castle.is_valid(%s)", (stranger,)).fetchone()[0] is False


def test_nine_quick_refreshes_do_not_flush_the_victims_copy(conn):
    """Issue #19, item 4: on 0.5.0 a family kept only its 8 newest tokens
    rotated away, so a thief refreshing nine times turned the victim's copy
    into an unknown id that revoked nothing."""
    victim = create(conn, "flush-victim", "1 hour")
    thief = conn.execute("SELECT castle.rotate(%s)", (victim,)).fetchone()[0]
    for _ in range(9):
        thief = conn.execute("SELECT castle.rotate(%s)", (thief,)).fetchone()[0]
    backdate_all = "UPDATE castle.sessions SET rotated_at = now() - interval '1 minute' " \
                   "WHERE user_id = 'flush-victim' AND rotated_at IS NOT NULL"
    conn.execute(backdate_all)
    # the victim's copy is still a reuse: refused, and the thief's newest is revoked with the family
    assert conn.execute("SELECT castle.is_valid(%s)", (victim,)).fetchone()[0] is False
    wait_revoked(conn, thief)


def test_a_family_refreshed_more_than_once_a_minute_for_an_hour_is_revoked(conn):
    """Remembering every copy of the last hour is bounded: the 61st rotation
    within an hour is taken for an attempt to flush a copy, refused like a
    reuse, and the family revoked."""
    token = create(conn, "flush-thief", "1 hour")
    for _ in range(60):
        token = conn.execute("SELECT castle.rotate(%s)", (token,)).fetchone()[0]
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
        conn.execute("SELECT castle.rotate(%s)", (token,))
    wait_revoked(conn, token)
    assert conn.execute("SELECT count(*) FROM castle.sessions WHERE user_id = 'flush-thief'").fetchone()[0] == 0
