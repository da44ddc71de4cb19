"""Bounded growth (issue #19, item 8): no user leaves a lock row behind, and
castle.stats' rows of dropped databases serve new ones. On 0.5.0
castle.user_locks kept a row for every user id ever signed in or passed to
revoke_all, and a 65th database was never counted until a restart."""
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg

from conftest import create, dsn


def test_no_user_leaves_a_row_behind(conn):
    """The user's lock is a heavyweight lock, written nowhere: castle.user_locks
    holds no row, whatever was signed in, out, pruned or trimmed."""
    token = create(conn, "growth-a", "1 hour")
    for _ in range(4):
        create(conn, "growth-b", "1 hour")
    conn.execute("SELECT castle.rotate(%s)", (token,))
    conn.execute("SELECT castle.revoke_all('growth-never'::text)")
    conn.execute("CALL castle.prune_all()")
    assert conn.execute("SELECT count(*) FROM castle.user_locks").fetchone()[0] == 0
    conn.execute("SELECT castle.revoke_all(u) FROM unnest(ARRAY['growth-a', 'growth-b']) AS u")
    assert conn.execute("SELECT count(*) FROM castle.user_locks").fetchone()[0] == 0


@contextmanager
def own_database(conn, name):
    """A new database with the extension, connected; dropped afterwards (and
    first, if an earlier run left it behind)."""
    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.execute(f"CREATE DATABASE {name}")
    try:
        with psycopg.connect(dsn(name), autocommit=True) as db:
            db.execute("CREATE EXTENSION castle_sessions")
            yield db
    finally:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_stats_rows_of_dropped_databases_count_new_ones(conn):
    # more databases, one after another, than castle.stats has rows (64)
    for n in range(70):
        name = f"castle_growth_{n}"
        with own_database(conn, name) as db:
            db.execute("SELECT castle.is_valid('not a token')")
            row = db.execute("SELECT collecting, refused_malformed FROM castle.stats "
                             "WHERE datname = current_database()").fetchone()
            assert row == (True, 1), (name, row)


def test_stats_sum_the_stripes_of_many_backends_counting_at_once(conn):
    """A database's row of castle.stats is split into 16 stripes, a backend
    adding to its pid's (stats.rs): 24 backends authenticating at once are
    counted exactly, and castle.stats_reset() clears every stripe. A database
    of its own, so that no other test's calls count."""
    with own_database(conn, "castle_stripes") as db:
        token = create(db, "stripes", "1 hour")
        counted = lambda: db.execute("SELECT authentications FROM castle.stats "  # noqa: E731
                                     "WHERE datname = current_database()").fetchone()[0]
        backends = [psycopg.connect(dsn("castle_stripes"), autocommit=True) for _ in range(24)]
        try:
            stripes = {b.execute("SELECT pg_backend_pid() % 16").fetchone()[0] for b in backends}
            assert len(stripes) > 1, "every backend's pid picked one stripe"

            def authenticate(backend, times):
                for _ in range(times):
                    backend.execute("SELECT castle.authenticate(%s)", (token,))

            def all_at_once(times):
                with ThreadPoolExecutor(len(backends)) as pool:
                    list(pool.map(lambda b: authenticate(b, times), backends))

            all_at_once(50)
            assert counted() == 24 * 50
            db.execute("SELECT castle.stats_reset()")
            assert counted() == 0
            all_at_once(1)
            assert counted() == 24
        finally:
            for b in backends:
                b.close()
