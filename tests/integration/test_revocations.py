"""Revocations after a reuse are never lost and never pile up (issue #19,
items 1 and 2), with the library preloaded, as the README recommends: a
request role cannot fill the worker table or stall a revocation for good; a
revocation survives the presenting backend's exit, a worker's termination, a
burst, and a database whose default isolation is REPEATABLE READ.

On 0.5.0 every one of these failed: one worker per presented token waited
forever on the request's lock, a pending revocation lived in the presenting
backend's memory, and a terminated worker was never retried."""
import os
import subprocess
import time

import psycopg
import pytest

from conftest import PG_BIN, create, dsn

REQUEST_ROLE = "castle_revocation_request"


def backdate_all_rotations(conn, user):
    conn.execute("UPDATE castle.sessions SET rotated_at = now() - interval '1 hour' "
                 "WHERE user_id = %s AND rotated_at IS NOT NULL", (user,))


def family_of(conn, user, rotations=1):
    """(the tokens rotated away, oldest first, the newest token) of a new sign-in of `user`."""
    tokens = [create(conn, user, "1 hour")]
    for _ in range(rotations):
        tokens.append(conn.execute("SELECT castle.rotate(%s)", (tokens[-1],)).fetchone()[0])
    return tokens[:-1], tokens[-1]


def is_valid(conn, token):
    return conn.execute("SELECT castle.is_valid(%s)", (token,)).fetchone()[0]


def present(conn, token):
    """A request presenting a token: refused, as any bad token."""
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
        conn.execute("SELECT castle.authenticate(%s)", (token,))


def castle_workers(conn):
    return conn.execute("SELECT count(*) FROM pg_stat_activity "
                        "WHERE backend_type IN ('castle_sessions worker', 'castle_sessions revocation', 'castle_sessions launcher')"
                        ).fetchone()[0]


def wait_until(condition, seconds=20, what="condition"):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def request_role():
    # connections of its own: a test may restart the server
    with psycopg.connect(dsn(), autocommit=True) as c:
        c.execute(f"DROP ROLE IF EXISTS {REQUEST_ROLE}")
        c.execute(f"CREATE ROLE {REQUEST_ROLE} LOGIN")
        c.execute(f"SELECT castle.grant_request_role('{REQUEST_ROLE}')")
    yield REQUEST_ROLE
    with psycopg.connect(dsn(), autocommit=True) as c:
        c.execute(f"REVOKE ALL ON ALL ROUTINES IN SCHEMA castle FROM {REQUEST_ROLE}")
        c.execute(f"REVOKE ALL ON SCHEMA castle FROM {REQUEST_ROLE}")
        c.execute(f"DROP ROLE {REQUEST_ROLE}")


def hold_users_lock(token):
    """The hostile request: signs out the user's other devices in a
    transaction left open, holding the user's lock row."""
    holder = psycopg.connect(dsn(user=REQUEST_ROLE))
    holder.execute("SELECT castle.login(%s)", (token,))
    holder.execute("SELECT castle.revoke_other_sessions()")
    return holder


def test_a_request_role_holding_a_users_lock_neither_fills_the_worker_table_nor_stalls_others(
        conn, request_role):
    held_old, held_new = family_of(conn, "held-user", rotations=8)
    device = create(conn, "held-user", "1 hour")
    backdate_all_rotations(conn, "held-user")
    holder = hold_users_lock(device)
    try:
        # the request role presents the family's 8 rotated-away tokens, again and again, from two connections
        with psycopg.connect(dsn(user=request_role), autocommit=True) as a, \
                psycopg.connect(dsn(user=request_role), autocommit=True) as b:
            most = 0
            for _ in range(10):
                for c in (a, b):
                    assert c.execute("SELECT bool_or(castle.is_valid(t)) FROM unnest(%s::text[]) AS t",
                                     (held_old,)).fetchone()[0] is False
                most = max(most, castle_workers(conn))
                time.sleep(0.05)
        # the launcher and at most two drain workers, whatever was presented
        assert most <= 3, most
        # another user's reuse is revoked meanwhile: the held family waits its turn, not the queue
        other_old, other_new = family_of(conn, "other-user")
        backdate_all_rotations(conn, "other-user")
        present(conn, other_old[0])
        wait_until(lambda: not is_valid(conn, other_new), what="another user's family was not revoked")
        assert is_valid(conn, held_new)
    finally:
        holder.rollback()
        holder.close()
    # once the lock is free, the held family's revocation is retried and done
    wait_until(lambda: not is_valid(conn, held_new), what="the held family was never revoked")
    assert conn.execute("SELECT count(*) FROM castle.sessions WHERE user_id = 'held-user' "
                        "AND (family_id IS NOT NULL OR rotated_at IS NOT NULL)").fetchone()[0] == 0


def test_a_revocation_outlives_the_backend_that_presented_the_reuse_and_its_worker(conn, request_role):
    old, new = family_of(conn, "orphan-user")
    device = create(conn, "orphan-user", "1 hour")
    backdate_all_rotations(conn, "orphan-user")
    holder = hold_users_lock(device)
    try:
        with psycopg.connect(dsn(), autocommit=True) as presenter:
            present(presenter, old[0])
        # the presenting backend is gone; the drain worker waits for the lock,
        # and is terminated
        wait_until(lambda: conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'castle_sessions worker' "
            "AND wait_event_type = 'Lock'").fetchone()[0] > 0, what="no drain worker waited for the lock")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE backend_type = 'castle_sessions worker'")
        # and so is the launcher: the postmaster restarts it
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE backend_type = 'castle_sessions launcher'")
        assert is_valid(conn, new)
    finally:
        holder.rollback()
        holder.close()
    wait_until(lambda: not is_valid(conn, new), what="the revocation was lost")
    wait_until(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity "
                                    "WHERE backend_type = 'castle_sessions launcher'").fetchone()[0] == 1,
               what="the launcher was not restarted")


def test_a_burst_of_reuses_in_one_backend_revokes_every_family(conn):
    families = [family_of(conn, f"burst-user-{n}") for n in range(100)]
    for n in range(100):
        backdate_all_rotations(conn, f"burst-user-{n}")
    tokens = [old[0] for old, _ in families]
    # one statement presents them all
    assert conn.execute("SELECT bool_or(castle.is_valid(t)) FROM unnest(%s::text[]) AS t",
                        (tokens,)).fetchone()[0] is False
    wait_until(lambda: conn.execute("SELECT count(*) FROM castle.sessions WHERE user_id LIKE 'burst-user-%'"
                                    ).fetchone()[0] == 0, seconds=60, what="a family of the burst was not revoked")


def test_a_repeatable_read_default_neither_fails_nor_misses_a_concurrent_rotation(conn):
    db = conn.execute("SELECT current_database()").fetchone()[0]
    conn.execute(f"ALTER DATABASE {db} SET default_transaction_isolation = 'repeatable read'")
    try:
        with psycopg.connect(dsn(), autocommit=True) as device:
            old, current = family_of(device, "rr-user")
            backdate_all_rotations(device, "rr-user")
            # another device rotates the family's newest token, in a transaction held open
            rotating = psycopg.connect(dsn())
            try:
                newest = rotating.execute("SELECT castle.rotate(%s)", (current,)).fetchone()[0]
                present(device, old[0])
                wait_until(lambda: conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'castle_sessions worker' "
                    "AND wait_event_type = 'Lock'").fetchone()[0] > 0, what="the worker did not wait")
                rotating.commit()
            finally:
                rotating.close()
            # the worker saw the rotation it waited for: its new session is revoked too
            wait_until(lambda: not is_valid(device, newest), what="the rotation's session survived the reuse")
            assert device.execute("SELECT count(*) FROM castle.sessions WHERE user_id = 'rr-user'"
                                  ).fetchone()[0] == 0
    finally:
        conn.execute(f"ALTER DATABASE {db} RESET default_transaction_isolation")


def test_a_queued_revocation_of_a_dropped_database_is_given_up_not_retried_forever(conn, request_role):
    conn.execute("DROP DATABASE IF EXISTS castle_dropped")
    conn.execute("CREATE DATABASE castle_dropped")
    log_path = os.path.join(os.environ["CASTLE_CLUSTER_DIR"], "server.log")
    with open(log_path, "rb") as log:
        log.seek(0, 2)
        start = log.tell()
    try:
        with psycopg.connect(dsn("castle_dropped"), autocommit=True) as db:
            db.execute("CREATE EXTENSION castle_sessions")
            db.execute(f"SELECT castle.grant_request_role('{request_role}')")
            old, new = family_of(db, "dropped-user")
            device = create(db, "dropped-user", "1 hour")
            backdate_all_rotations(db, "dropped-user")
            holder = psycopg.connect(dsn("castle_dropped", user=request_role))
            holder.execute("SELECT castle.login(%s)", (device,))
            holder.execute("SELECT castle.revoke_other_sessions()")
            present(db, old[0])
        # the database goes while its revocation waits
        conn.execute("DROP DATABASE castle_dropped WITH (FORCE)")
        holder.close()

        def said():
            with open(log_path, "rb") as log:
                log.seek(start)
                return b"is gone or takes no connections" in log.read()
        wait_until(said, what="the launcher did not give up the dropped database's revocation")
        time.sleep(1)
        # and does not start workers for it again and again (this database's
        # own worker may be writing uses)
        assert conn.execute("""SELECT count(*) FROM pg_stat_activity
                                WHERE backend_type IN ('castle_sessions worker', 'castle_sessions revocation')
                                  AND datname IS DISTINCT FROM current_database()""").fetchone()[0] == 0
    finally:
        conn.execute("DROP DATABASE IF EXISTS castle_dropped WITH (FORCE)")


@pytest.mark.parametrize("stop", ["fast", "immediate"])
def test_a_queued_revocation_survives_a_restart_and_a_crash(conn, request_role, stop):
    """The launcher keeps the queue in the data directory: a fast shutdown
    or a crash (an immediate stop skips every shutdown step) while a
    revocation waits loses it not."""
    user = f"restart-{stop}"
    old, new = family_of(conn, user)
    device = create(conn, user, "1 hour")
    backdate_all_rotations(conn, user)
    holder = hold_users_lock(device)
    try:
        present(conn, old[0])
        wait_until(lambda: conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'castle_sessions worker' "
            "AND wait_event_type = 'Lock'").fetchone()[0] > 0, what="no drain worker waited for the lock")
        time.sleep(0.5)  # the launcher saves the queue every 0.2 s
        cluster = os.environ["CASTLE_CLUSTER_DIR"]
        # the family is in the saved queue (a fast stop may also let the worker finish first)
        family = conn.execute("SELECT min(id) FROM castle.sessions WHERE user_id = %s", (user,)).fetchone()[0]
        with open(f"{cluster}/data/castle_sessions.revocations") as saved:
            assert any(line.split()[1:2] == [str(family)] for line in saved.read().splitlines()[1:])
        pg_ctl = ["sudo", "-u", "postgres", f"{PG_BIN}/pg_ctl", "-D", f"{cluster}/data"]
        subprocess.run(pg_ctl + ["-m", stop, "stop"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(pg_ctl + ["-l", f"{cluster}/server.log", "-w", "start"], check=True,
                       stdout=subprocess.DEVNULL)
    finally:
        holder.close()
    with psycopg.connect(dsn(), autocommit=True) as after:
        wait_until(lambda: not is_valid(after, new), what=f"the revocation was lost by a {stop} stop")
        if stop == "immediate":
            # done after the crash, from the saved queue (the counters start anew with the server)
            assert after.execute("SELECT reuses_detected FROM castle.stats "
                                 "WHERE datname = current_database()").fetchone()[0] >= 1
