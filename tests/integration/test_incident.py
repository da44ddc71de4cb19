"""The incident switch (issue #19, item 5): castle.revoke_everything refuses
every token issued before it, at once, for the owner or a superuser only.
On 0.5.0 the documented switch, a new castle.token_prefix, refused nothing:
the prefix is covered by neither the checksum nor the hash."""
import threading
import time

import psycopg
import pytest

from conftest import create, dsn


def refused(conn, token):
    try:
        conn.execute("SELECT castle.authenticate(%s)", (token,))
    except psycopg.errors.InvalidAuthorizationSpecification:
        return True
    return False


def test_every_token_issued_before_is_refused_at_once(conn):
    tokens = [create(conn, f"incident-{i}", "1 hour") for i in range(5)]
    old = create(conn, "incident-rotated", "1 hour")
    new = conn.execute("SELECT castle.rotate(%s)", (old,)).fetchone()[0]
    tokens += [old, new]
    count = conn.execute("SELECT castle.revoke_everything()").fetchone()[0]
    assert count >= 7
    assert conn.execute("SELECT count(*) FROM castle.sessions").fetchone()[0] == 0
    for token in tokens:
        assert refused(conn, token)
        assert conn.execute("SELECT castle.is_valid(%s)", (token,)).fetchone()[0] is False
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
            conn.execute("SELECT castle.rotate(%s)", (token,))
    # signing in again works
    assert conn.execute("SELECT castle.is_valid(%s)", (create(conn, "incident-0"),)).fetchone()[0] is True


def test_issued_before_spares_the_sessions_issued_after(conn):
    conn.execute("SELECT castle.revoke_everything()")
    old = create(conn, "incident-old", "1 hour")
    conn.execute("UPDATE castle.sessions SET created_at = created_at - interval '1 hour'")
    fresh = create(conn, "incident-fresh", "1 hour")
    assert conn.execute("SELECT castle.revoke_everything(now() - interval '30 minutes')").fetchone()[0] == 1
    assert refused(conn, old)
    assert not refused(conn, fresh)


def test_a_sign_in_in_flight_is_waited_for_and_revoked(conn):
    signing_in = psycopg.connect(dsn())
    try:
        token = create(signing_in, "incident-in-flight", "1 hour")   # not committed yet
        result = {}

        def switch():
            with psycopg.connect(dsn(), autocommit=True) as dba:
                result["count"] = dba.execute("SELECT castle.revoke_everything()").fetchone()[0]

        dba = threading.Thread(target=switch)
        dba.start()
        # the switch waits for the sign-in's transaction: its table lock is not granted
        deadline = time.monotonic() + 10
        while not conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = 'castle.sessions'::regclass "
                "AND mode = 'ShareRowExclusiveLock' AND NOT granted)").fetchone()[0]:
            assert time.monotonic() < deadline, "revoke_everything did not wait for the sign-in"
            time.sleep(0.02)
        assert dba.is_alive()
        signing_in.commit()
        dba.join(10)
        assert not dba.is_alive()
        assert result["count"] >= 1
        assert refused(conn, token)
    finally:
        signing_in.close()


def test_only_the_owner_or_a_superuser_can_throw_it(conn):
    for role in ("incident_request", "incident_sign_in", "incident_granted"):
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        conn.execute("SELECT castle.grant_request_role('incident_request')")
        conn.execute("SELECT castle.grant_sign_in_role('incident_sign_in')")
        # EXECUTE alone is not enough: it runs with the caller's rights
        conn.execute("GRANT USAGE ON SCHEMA castle TO incident_granted")
        conn.execute("GRANT EXECUTE ON FUNCTION castle.revoke_everything(timestamptz) TO incident_granted")
        token = create(conn, "incident-kept", "1 hour")
        for role in ("incident_request", "incident_sign_in", "incident_granted"):
            with psycopg.connect(dsn(user=role), autocommit=True) as app:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    app.execute("SELECT castle.revoke_everything()")
        assert not refused(conn, token)
    finally:
        conn.execute("REVOKE ALL ON SCHEMA castle FROM incident_granted")
        conn.execute("REVOKE ALL ON FUNCTION castle.revoke_everything(timestamptz) FROM incident_granted")
        for role in ("incident_request", "incident_sign_in", "incident_granted"):
            conn.execute(f"REVOKE ALL ON ALL ROUTINES IN SCHEMA castle FROM {role}")
            conn.execute(f"REVOKE ALL ON SCHEMA castle FROM {role}")
            conn.execute(f"DROP ROLE {role}")


def test_caches_hear_it_as_one_notification(conn):
    create(conn, "incident-cached", "1 hour")
    with psycopg.connect(dsn(), autocommit=True) as listener:
        listener.execute("LISTEN castle_revocations")
        conn.execute("SET castle.notify_revocations = on")
        try:
            count = conn.execute("SELECT castle.revoke_everything()").fetchone()[0]
        finally:
            conn.execute("RESET castle.notify_revocations")
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert payloads == [f'{{"event":"revoke_everything","count":{count},"all":true}}']


def test_it_refuses_to_run_on_a_transaction_snapshot(conn):
    """Under REPEATABLE READ its snapshot would predate the lock it waits
    for, and miss the sessions of sign-ins that committed meanwhile."""
    token = create(conn, "incident-rr", "1 hour")
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(psycopg.errors.InvalidTransactionState):
            conn.execute("SELECT castle.revoke_everything()")
    assert not refused(conn, token)
