"""Last use, recorded off the request path (issue #24): a successful check queues
its use when its transaction commits, and a standing worker writes it. The
request takes no transaction id and no lock, so the use of a READ ONLY or
REPEATABLE READ request is recorded too; a rollback records nothing; a
session in use never goes idle; castle.idle_timeout holds to its stated
precision (castle.touch_interval plus the flush delay, about a second)."""
import json
import os
import secrets
import time
from pathlib import Path

import psycopg
import pytest

import seed_algorithm as seed
from conftest import create, dsn, user_of

CLUSTER = Path(os.environ["CASTLE_CLUSTER_DIR"])  # the cluster scripts/test.sh started



def used_at(conn, token):
    return conn.execute("SELECT used_at FROM castle.sessions WHERE id = %s",
                        (seed.split(token)[0],)).fetchone()[0]


def wait_for(what, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.02)
    return what()


def recorded_so_far(conn):
    """Waits until every use queued before this call is written: a marker
    session's use, queued after them, is written in the same batch or a
    later one by the database's one worker."""
    with psycopg.connect(dsn(options="'-c castle.touch_interval=0'"), autocommit=True) as marking:
        marker = create(marking, "use-marker", "1 hour")
        marking.execute("SELECT castle.authenticate(%s)", (marker,))
        assert wait_for(lambda: used_at(marking, marker)), "the worker wrote no use within 10 s"
        marking.execute("SELECT castle.revoke(%s)", (marker,))


def test_a_request_takes_no_transaction_id_and_no_lock_and_its_use_is_recorded_after_commit(conn):
    token = create(conn, "use-after-commit", "1 hour")
    sid = seed.split(token)[0]
    with psycopg.connect(dsn()) as request, psycopg.connect(dsn(), autocommit=True) as other:
        before = time.time()
        request.execute("SELECT castle.login(%s)", (token,))
        pid = request.info.backend_pid
        assert request.execute("SELECT pg_current_xact_id_if_assigned()").fetchone()[0] is None
        held = other.execute("""SELECT locktype, mode FROM pg_locks
                                 WHERE pid = %s AND locktype IN ('tuple', 'transactionid')""",
                             (pid,)).fetchall()
        assert held == [], f"the request holds {held}"
        # the row is free: a sign-out need not wait for the request
        other.execute("BEGIN")
        other.execute("SELECT 1 FROM castle.sessions WHERE id = %s FOR UPDATE NOWAIT", (sid,))
        other.execute("ROLLBACK")
        time.sleep(0.5)
        assert used_at(conn, token) is None, "nothing is recorded before the commit"
        request.commit()
    recorded = wait_for(lambda: used_at(conn, token))
    assert recorded is not None, "the use was recorded after the commit"
    assert recorded.timestamp() >= before - 1
    conn.execute("SELECT castle.revoke(%s)", (token,))


@pytest.mark.parametrize("begin", ["BEGIN READ ONLY", "BEGIN ISOLATION LEVEL REPEATABLE READ",
                                   "BEGIN ISOLATION LEVEL SERIALIZABLE"])
def test_the_use_of_a_read_only_or_repeatable_read_request_is_recorded(conn, begin):
    """On 0.5.0 these requests could not write used_at, and their uses
    were lost; now nothing is written in them."""
    token = create(conn, "use-read-only", "1 hour")
    with psycopg.connect(dsn(), autocommit=True) as request:
        request.execute(begin)
        request.execute("SELECT castle.authenticate(%s)", (token,))
        request.execute("COMMIT")
    assert wait_for(lambda: used_at(conn, token)), f"the use in {begin} was recorded"
    conn.execute("SELECT castle.revoke(%s)", (token,))


def test_a_rolled_back_request_or_savepoint_records_nothing(conn):
    rolled_back, in_savepoint, kept = (create(conn, f"use-rollback-{i}", "1 hour") for i in range(3))
    with psycopg.connect(dsn(), autocommit=True) as request:
        request.execute("BEGIN")
        request.execute("SELECT castle.authenticate(%s)", (rolled_back,))
        request.execute("ROLLBACK")
        request.execute("BEGIN")
        request.execute("SELECT castle.authenticate(%s)", (kept,))
        request.execute("SAVEPOINT s")
        request.execute("SELECT castle.authenticate(%s)", (in_savepoint,))
        request.execute("ROLLBACK TO SAVEPOINT s")
        request.execute("COMMIT")
    recorded_so_far(conn)
    assert used_at(conn, rolled_back) is None
    assert used_at(conn, in_savepoint) is None
    assert used_at(conn, kept) is not None
    for token in (rolled_back, in_savepoint, kept):
        conn.execute("SELECT castle.revoke(%s)", (token,))


def test_touch_interval_throttles_and_every_due_use_is_recorded(conn):
    token = create(conn, "use-throttled", "1 hour")
    conn.execute("SET castle.touch_interval = '1h'")
    for _ in range(50):
        conn.execute("SELECT castle.authenticate(%s)", (token,))
    first = wait_for(lambda: used_at(conn, token))
    assert first is not None
    for _ in range(50):
        conn.execute("SELECT castle.authenticate(%s)", (token,))
    recorded_so_far(conn)
    assert used_at(conn, token) == first, "no write due within castle.touch_interval"

    conn.execute("SET castle.touch_interval = 0")
    for _ in range(20):
        last = time.time()
        conn.execute("SELECT castle.authenticate(%s)", (token,))
    recorded_so_far(conn)
    assert used_at(conn, token).timestamp() >= last - 0.01, "touch_interval = 0 records the latest use"

    conn.execute("SET castle.touch_interval = -1")
    before = used_at(conn, token)
    time.sleep(0.01)
    conn.execute("SELECT castle.authenticate(%s)", (token,))
    recorded_so_far(conn)
    assert used_at(conn, token) == before, "touch_interval = -1 never records"
    conn.execute("SELECT castle.revoke(%s)", (token,))


def settled(conn, stats):
    """The counters once the worker has reported its last batch (it reports
    right after the batch commits, so just after the uses are visible)."""
    def read():
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute(stats).fetchone()
    last, deadline = read(), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = read()
        if now == last:
            return now
        last = now
    return last


def test_the_worker_writes_uses_in_hot_batches(conn):
    """20 sessions, each used in 10 successive batches: every use written,
    by one UPDATE per batch, and HOT (used_at is in no index)."""
    users = [f"use-batch-{i}" for i in range(20)]
    tokens = [create(conn, user, "1 hour") for user in users]
    stats = """SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
                WHERE relid = 'castle.sessions'::regclass"""
    with psycopg.connect(dsn(options="'-c castle.touch_interval=0'")) as request:
        # A first batch, not counted: a new row's page may be full (the
        # table has no fillfactor), so its first update can move it; HOT
        # needs room on the page, and after one move the row has some.
        for token in tokens:
            request.execute("SELECT castle.authenticate(%s)", (token,))
        request.commit()
        recorded_so_far(conn)
        before = settled(conn, stats)
        for _ in range(10):
            for token in tokens:
                request.execute("SELECT castle.authenticate(%s)", (token,))
            request.commit()   # 20 uses queued at one commit
            recorded_so_far(conn)

    def flushed():
        conn.execute("SELECT pg_stat_clear_snapshot()")
        now = conn.execute(stats).fetchone()
        return now if now[0] - before[0] >= 200 else None

    after = wait_for(flushed) or conn.execute(stats).fetchone()
    assert all(used_at(conn, t) is not None for t in tokens)
    updates, hot = after[0] - before[0], after[1] - before[1]
    # 10 markers (recorded_so_far) besides
    assert 200 <= updates <= 220, f"{updates} updates for 200 uses in 10 batches"
    # (an indexed used_at would make none HOT; a page that fills before
    # pruning can make a few not)
    assert hot >= 0.8 * updates, f"used_at is in no index, so updates stay HOT ({hot} of {updates})"
    conn.execute("SELECT castle.revoke_all(u) FROM unnest(%s::text[]) AS u", (users,))


def test_under_steady_traffic_the_worker_writes_a_batch_per_flush_delay(conn):
    """Uses that keep coming, one commit at a time, are gathered for the
    flush delay (0.1 s) and written together. A worker that wrote whatever
    it found the moment its last write was done would, given a core of its
    own, take transaction ids as fast as it can commit: hundreds a second,
    and an anti-wraparound vacuum every few days."""
    users = [f"use-steady-{i}" for i in range(200)]
    tokens = [create(conn, user, "1 hour") for user in users]
    recorded_so_far(conn)
    xid = "SELECT pg_current_xact_id()::text::bigint"  # takes one itself
    with psycopg.connect(dsn(options="'-c castle.touch_interval=0'"), autocommit=True) as request:
        first = conn.execute(xid).fetchone()[0]
        started, uses = time.monotonic(), 0
        while time.monotonic() - started < 1.5:
            request.execute("SELECT castle.authenticate(%s)", (tokens[uses % 200],))  # takes none
            uses += 1
        spread = time.monotonic() - started
    recorded_so_far(conn)  # its marker: a sign-in, a use and a sign-out
    taken = conn.execute(xid).fetchone()[0] - first - 1
    ids = [seed.split(token)[0] for token in tokens]
    written = conn.execute("SELECT count(used_at) FROM castle.sessions WHERE id = ANY (%s)",
                           (ids,)).fetchone()[0]
    assert written == 200, f"{written} of 200 sessions' uses written"
    # 200 sessions never fill a batch, so every batch is followed by a nap:
    # one a flush delay at most, the first, and the marker's; each takes two
    # ids (its transaction, and the subtransaction a failure is caught in);
    # the marker's sign-in and sign-out two more; and a few for what else
    # the cluster may do meanwhile (an autoanalyze of castle.sessions)
    batches = int(spread / 0.1) + 3
    assert taken <= 2 * batches + 2 + 4, \
        f"{uses} uses over {spread:.2f} s took {taken} transaction ids (at most {batches} batches)"
    conn.execute("SELECT castle.revoke_all(u) FROM unnest(%s::text[]) AS u", (users,))


def test_a_session_another_transaction_holds_is_skipped_never_waited_for(conn):
    """The worker never waits for a row: one held by another transaction (a
    sign-out in progress, say) is skipped and counted, the uses queued with
    it are written, and the skipped one is written at its next due check."""
    held, free = create(conn, "use-held", "1 hour"), create(conn, "use-free", "1 hour")
    skipped = "SELECT touches_skipped FROM castle.stats WHERE datname = current_database()"
    before = conn.execute(skipped).fetchone()[0]
    with psycopg.connect(dsn()) as holder, \
            psycopg.connect(dsn(options="'-c castle.touch_interval=0'"), autocommit=True) as request:
        holder.execute("SELECT 1 FROM castle.sessions WHERE id = %s FOR UPDATE", (seed.split(held)[0],))
        request.execute("BEGIN")
        request.execute("SELECT castle.authenticate(%s)", (held,))
        request.execute("SELECT castle.authenticate(%s)", (free,))
        request.execute("COMMIT")
        # a worker that waited for the held row would write no later use
        recorded_so_far(conn)
        assert used_at(conn, free) is not None
        assert used_at(conn, held) is None, "the held row was skipped"
        assert conn.execute(skipped).fetchone()[0] - before >= 1, "and counted as skipped"
        holder.rollback()
        request.execute("SELECT castle.authenticate(%s)", (held,))
        recorded_so_far(conn)
        assert used_at(conn, held) is not None, "recorded at its next check"
    conn.execute("SELECT castle.revoke_all(u) FROM unnest(ARRAY['use-held', 'use-free']) AS u")


def test_a_dbas_check_holds_for_every_use_recorded(conn):
    """Recording a use evaluates the table's CHECKs as an UPDATE would: a
    use that breaks a DBA's CHECK is not written (the worker logs which
    constraint, and no row), and others are."""
    log = CLUSTER / "server.log"
    token = create(conn, "use-checked", "1 hour")
    start = log.stat().st_size
    conn.execute("""ALTER TABLE castle.sessions ADD CONSTRAINT use_checked_never_used
                    CHECK (user_id <> 'use-checked' OR used_at IS NULL) NOT VALID""")
    try:
        with psycopg.connect(dsn(options="'-c castle.touch_interval=0'"), autocommit=True) as request:
            request.execute("SELECT castle.authenticate(%s)", (token,))

        def logged():
            text = log.read_bytes()[start:].decode(errors="replace")
            return [line for line in text.splitlines() if "uses of sessions not recorded" in line]
        lines = wait_for(logged)
        assert lines, "the worker logged the uses it could not record"
        assert "use_checked_never_used" in lines[0], "naming the constraint"
        assert seed.split(token)[1] not in lines[0] and "Failing row" not in lines[0], "and no row"
        assert used_at(conn, token) is None, "the CHECK held"
    finally:
        conn.execute("ALTER TABLE castle.sessions DROP CONSTRAINT use_checked_never_used")
    with psycopg.connect(dsn(options="'-c castle.touch_interval=0'"), autocommit=True) as request:
        request.execute("SELECT castle.authenticate(%s)", (token,))
    recorded_so_far(conn)
    assert used_at(conn, token) is not None
    conn.execute("SELECT castle.revoke(%s)", (token,))


def test_a_use_whose_row_moves_gives_every_index_its_new_entry(conn):
    """A row with no room left on its page cannot be updated in place (HOT):
    its new version goes to another page, and each index needs an entry for
    it, or an index scan would no longer find the session."""
    users = [f"use-moved-{i}" for i in range(8)]
    # about 1,900 bytes a row, under the size PostgreSQL compresses at: four
    # fill a page, and none leaves room for a second version of itself
    tokens = [create(conn, user, "1 hour", json.dumps({"pad": secrets.token_hex(850)})) for user in users]
    ids = [seed.split(token)[0] for token in tokens]
    stats = """SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
                WHERE relid = 'castle.sessions'::regclass"""
    before = settled(conn, stats)
    with psycopg.connect(dsn(options="'-c castle.touch_interval=0'"), autocommit=True) as request:
        for token in tokens:
            request.execute("SELECT castle.authenticate(%s)", (token,))
    recorded_so_far(conn)
    after = settled(conn, stats)
    assert all(used_at(conn, token) is not None for token in tokens)
    moved = (after[0] - before[0]) - (after[1] - before[1])
    assert moved >= 1, "some of these rows had to move (the test needs them to)"
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET enable_bitmapscan = off")
    by_id = conn.execute("SELECT count(*) FROM castle.sessions WHERE id = ANY (%s)", (ids,)).fetchone()[0]
    by_user = conn.execute("SELECT count(*) FROM castle.sessions WHERE user_id = ANY (%s)",
                           (users,)).fetchone()[0]
    conn.execute("RESET enable_seqscan")
    conn.execute("RESET enable_bitmapscan")
    assert (by_id, by_user) == (8, 8), "found through the primary key and the user index"
    assert all(user_of(conn, token) == user for token, user in zip(tokens, users))
    conn.execute("SELECT castle.revoke_all(u) FROM unnest(%s::text[]) AS u", (users,))


def test_a_session_in_use_never_idles_and_an_idle_one_is_refused_within_the_stated_precision(conn):
    """idle_timeout 4 s, touch_interval 1 s: used every 0.3 s for 6 s the
    session stays live; left alone, it stays live until at least
    idle_timeout - touch_interval - 1 s after its last use, and is refused
    once idle_timeout has passed."""
    settings = "-c castle.idle_timeout=4s -c castle.touch_interval=1s"
    with psycopg.connect(dsn(options=f"'{settings}'"), autocommit=True) as request:
        token = create(request, "use-idle", "1 hour")
        start = time.monotonic()
        while time.monotonic() - start < 6:
            last = time.monotonic()
            assert request.execute("SELECT castle.is_valid(%s)", (token,)).fetchone()[0] is True
            request.execute("SELECT castle.authenticate(%s)", (token,))
            time.sleep(0.3)
        time.sleep(max(0.0, last + 4 - 1 - 1 - time.monotonic()))
        assert request.execute("SELECT castle.is_valid(%s)", (token,)).fetchone()[0] is True, \
            "live until idle_timeout - touch_interval - the flush delay"
        time.sleep(max(0.0, last + 4.2 - time.monotonic()))
        assert request.execute("SELECT castle.is_valid(%s)", (token,)).fetchone()[0] is False, \
            "refused once idle_timeout has passed since the last use"


def test_without_preloading_the_request_writes_its_use_at_commit():
    """No shared memory, no worker: the documented rule is 0.5.0's — the use
    is written in the request's own transaction as it commits."""
    AUDIT_PORT = os.environ["CASTLE_AUDIT_PORT"]  # a cluster that preloads pgaudit only
    with psycopg.connect(f"host=127.0.0.1 port={AUDIT_PORT} user=postgres dbname=postgres",
                         autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = 'castle_unpreloaded'").fetchone():
            admin.execute("CREATE DATABASE castle_unpreloaded")
    with psycopg.connect(f"host=127.0.0.1 port={AUDIT_PORT} user=postgres dbname=castle_unpreloaded",
                         autocommit=True) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS castle_sessions")
        assert db.execute("SELECT collecting FROM castle.stats WHERE datname = current_database()"
                          ).fetchone()[0] is False, "castle_sessions is not preloaded here"
        token = create(db, "unpreloaded", "1 hour")
        db.execute("SELECT castle.authenticate(%s)", (token,))
        assert used_at(db, token) is not None, "written by the request's commit"
        db.execute("SELECT castle.revoke(%s)", (token,))
