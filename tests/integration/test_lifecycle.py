"""Session lifecycle from a real client: last-use writes counted in the
statistics views, no write for a refused token, pruning under concurrent load,
and the pg_cron recipe."""
import os
import re
import threading
import time

import psycopg
import pytest

import seed_algorithm as seed
from conftest import create, dsn, user_of, one_server_only


def row_version(conn, sid):
    """The session row's version (xmin) and used_at: a write to it changes both."""
    return conn.execute("SELECT xmin::text, used_at FROM castle.sessions WHERE id = %s", (sid,)).fetchone()


def authenticate_n_times(conn, token, n):
    for _ in range(n):
        conn.execute("SELECT * FROM castle.authenticate(%s)", (token,))


def test_a_refused_token_writes_nothing_and_takes_no_transaction_id(conn):
    good = create(conn, "refused-writer", "1 hour")
    sid, _ = seed.split(good)
    conn.execute("SET castle.touch_interval = 0")
    forged = seed.token(sid, seed.new_secret())
    before = row_version(conn, sid)
    for _ in range(50):
        assert user_of(conn, forged) is None
    time.sleep(1.5)  # longer than the standing worker takes to write a queued use
    # (the table as a whole is no measure: the worker may be writing other sessions' uses)
    assert row_version(conn, sid) == before
    with conn.transaction():
        conn.execute("SELECT castle.verify(%s)", (forged,))
        assert conn.execute("SELECT pg_current_xact_id_if_assigned() IS NULL").fetchone()[0]


def test_no_write_due_takes_no_transaction_id(conn):
    token = create(conn, "no-xid", "1 hour")
    user_of(conn, token)  # the first use is recorded
    with conn.transaction():
        assert user_of(conn, token) == "no-xid"
        assert conn.execute("SELECT pg_current_xact_id_if_assigned() IS NULL").fetchone()[0]


@one_server_only("it loads 200,000 rows into the one table and times one server's locks")
def test_prune_does_not_block_logins_for_longer_than_a_batch(conn):
    # forty batches of dead rows, with logins running throughout
    dead, batch = 200_000, 5_000
    conn.execute("""
        INSERT INTO castle.sessions (hash, user_id, created_at, expires_at)
        SELECT md5(i::text) || md5((-i)::text), 'pruned-' || (i %% 500),
               now() - interval '2 days', now() - interval '1 day'
          FROM generate_series(1, %s) AS i""", (dead,))
    conn.execute("ANALYZE castle.sessions")
    live = {create(conn, f"pruned-{i}", "1 hour"): f"pruned-{i}" for i in range(500, 510)}

    stop = threading.Event()
    latencies, errors, batch_times = [], [], []

    def sign_in_and_check(n):
        try:
            with psycopg.connect(dsn(), autocommit=True) as c:
                while not stop.is_set():
                    t0 = time.monotonic()
                    tok = create(c, f"pruned-{n}", "1 hour")  # trims this user's dead sessions too
                    assert user_of(c, tok) == f"pruned-{n}"
                    latencies.append(time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def prune():
        with psycopg.connect(dsn(), autocommit=True) as c:
            while True:
                t0 = time.monotonic()
                n = c.execute("SELECT castle.prune(%s)", (batch,)).fetchone()[0]
                batch_times.append(time.monotonic() - t0)
                if n < batch:
                    return

    workers = [threading.Thread(target=sign_in_and_check, args=(n,)) for n in range(3)]
    for w in workers:
        w.start()
    pruner = threading.Thread(target=prune)
    pruner.start()
    pruner.join()
    stop.set()
    for w in workers:
        w.join()

    assert not errors, errors
    assert len(batch_times) >= dead // batch
    assert latencies, "logins ran during the prune"
    slowest_batch = max(batch_times)
    assert max(latencies) <= slowest_batch + 0.5, (max(latencies), slowest_batch)
    assert conn.execute("""SELECT count(*) FROM castle.sessions
                           WHERE expires_at <= now()""").fetchone()[0] == 0
    for tok, user in live.items():
        assert user_of(conn, tok) in (user, None)  # trimming may have replaced it, pruning never


@one_server_only("prune through the router commits on every shard at once; no batch stays open in the caller's transaction")
def test_a_sign_in_never_waits_for_dead_rows_a_prune_batch_holds(conn):
    """Regression (0.5.0, seen on the assert-enabled builds): a sign-in's trimming
    waited for every prune batch holding one of the user's dead sessions, one
    batch after another, and so waited longer than a batch."""
    user = "held-by-prune"
    oldest, *kept = [create(conn, user, "1 hour") for _ in range(3)]  # castle.max_sessions = 3
    conn.execute("""
        INSERT INTO castle.sessions (hash, user_id, created_at, expires_at)
        SELECT md5('held' || i) || md5('by prune' || i), %s,
               now() - interval '2 days', now() - interval '1 day'
          FROM generate_series(1, 200) AS i""", (user,))

    with psycopg.connect(dsn(), autocommit=True) as pruner, \
            psycopg.connect(dsn(), autocommit=True) as signer:
        with pruner.transaction():
            assert pruner.execute("SELECT castle.prune(1000000)").fetchone()[0] >= 200
            # the batch holds the user's 200 dead rows until it commits
            signer.execute("SET lock_timeout = '3s'")
            newest = create(signer, user, "1 hour")  # LockNotAvailable if it waited
            assert user_of(signer, oldest) is None, "the oldest live session still makes room"
            for token in [*kept, newest]:
                assert user_of(signer, token) == user
    assert conn.execute("SELECT count(*) FROM castle.sessions WHERE user_id = %s",
                        (user,)).fetchone()[0] == 3


def test_an_idle_session_a_request_is_recording_a_use_of_is_trimmed_not_revived(conn):
    """The other side of skipping what prune holds: a request that found a
    session live just before it went idle holds the row to record the use
    (FOR NO KEY UPDATE, then UPDATE used_at). A sign-in judging it idle must
    wait for that and delete it, or the use brings it back as one session
    over castle.max_sessions."""
    user = "touched-while-idle"
    idle, *fresh = [create(conn, user, "1 day") for _ in range(3)]  # castle.max_sessions = 3
    idle_id = seed.split(idle)[0]
    conn.execute("UPDATE castle.sessions SET created_at = now() - interval '2 hours', used_at = NULL "
                 "WHERE id = %s", (idle_id,))
    signer_pid, errors = [], []

    def sign_in():
        try:
            with psycopg.connect(dsn(), autocommit=True) as c:
                c.execute("SET castle.idle_timeout = '1h'")
                signer_pid.append(c.info.backend_pid)
                create(c, user, "1 day")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with psycopg.connect(dsn()) as request:  # as the use-recording path does, by hand
        request.execute("SELECT 1 FROM castle.sessions WHERE id = %s FOR NO KEY UPDATE", (idle_id,))
        signer = threading.Thread(target=sign_in)
        signer.start()
        deadline = time.monotonic() + 10
        while signer.is_alive() and time.monotonic() < deadline:
            if signer_pid and conn.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity "
                                           "WHERE pid = %s", (signer_pid[0],)).fetchone()[0]:
                break
            time.sleep(0.02)
        request.execute("UPDATE castle.sessions SET used_at = now() WHERE id = %s", (idle_id,))
        request.commit()
    signer.join()
    assert not errors, errors
    live = conn.execute("""SELECT count(*) FROM castle.sessions
                            WHERE user_id = %s AND rotated_at IS NULL
                              AND COALESCE(used_at, created_at) > now() - interval '1 hour'""",
                        (user,)).fetchone()[0]
    assert live == 3, "at most castle.max_sessions live sessions"
    assert user_of(conn, idle) is None
    for token in fresh:
        assert user_of(conn, token) == user


@one_server_only("the shards' clusters do not preload pg_cron")
def test_pg_cron_runs_the_prune_recipe(conn):
    if "pg_cron" not in os.environ.get("CASTLE_PRELOAD", "pg_cron"):
        pytest.skip("pg_cron is not built for this server: the Debian packaging of its source "
                    "cannot be downloaded here, so the assert-enabled build has no pg_cron")
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    for i in range(5):
        tok = create(conn, "cron-user", "1 hour")
        conn.execute("UPDATE castle.sessions SET expires_at = now() - interval '1 second' WHERE id = %s",
                     (seed.split(tok)[0],))
    # every minute (the recipe's own schedule) waits for the next minute; pg_cron
    # 1.5 and later (Debian 13's) also take seconds
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]
    major_minor = tuple(int(n) for n in re.match(r"(\d+)\.(\d+)", version).groups())  # '1.4-1', '1.6'
    every = "2 seconds" if major_minor >= (1, 5) else "* * * * *"
    job = conn.execute("SELECT cron.schedule('castle-prune', %s, 'CALL castle.prune_all()')", (every,)).fetchone()[0]
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline:
            status = conn.execute("SELECT status FROM cron.job_run_details WHERE jobid = %s "
                                  "ORDER BY start_time DESC LIMIT 1", (job,)).fetchone()
            if status and status[0] in ("succeeded", "failed"):
                break
            time.sleep(1)
        assert status and status[0] == "succeeded", status
        left = conn.execute("SELECT count(*) FROM castle.sessions WHERE user_id = 'cron-user'").fetchone()[0]
        assert left == 0
    finally:
        conn.execute("SELECT cron.unschedule(%s)", (job,))
