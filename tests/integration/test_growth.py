"""Bounded growth (issue #19, item 8): a user's lock row goes with their last
session, and castle.stats' rows of dropped databases serve new ones. On 0.5.0
castle.user_locks kept a row for every user id ever signed in or passed to
revoke_all, and a 65th database was never counted until a restart."""
import psycopg

from conftest import create, dsn


def lock_rows(conn, user):
    return conn.execute("SELECT count(*) FROM castle.user_locks WHERE user_id = %s", (user,)).fetchone()[0]


def test_a_users_lock_row_goes_with_their_last_session(conn):
    token = create(conn, "growth-a", "1 hour")
    assert lock_rows(conn, "growth-a") == 1
    conn.execute("SELECT castle.revoke(%s)", (token,))
    assert lock_rows(conn, "growth-a") == 0
    create(conn, "growth-b", "1 hour")
    conn.execute("SELECT castle.revoke_all('growth-b'::text)")
    assert lock_rows(conn, "growth-b") == 0
    # an id that never signed in leaves nothing behind
    conn.execute("SELECT castle.revoke_all('growth-never'::text)")
    assert lock_rows(conn, "growth-never") == 0
    # a session that expired: prune takes it, then its lock row
    create(conn, "growth-c", "1 hour")
    conn.execute("UPDATE castle.sessions SET expires_at = now() - interval '1 second' WHERE user_id = 'growth-c'")
    conn.execute("CALL castle.prune_all()")
    assert lock_rows(conn, "growth-c") == 0
    # while a session remains, so does the row
    create(conn, "growth-d", "1 hour")
    conn.execute("CALL castle.prune_all()")
    assert lock_rows(conn, "growth-d") == 1
    conn.execute("SELECT castle.revoke_all('growth-d'::text)")


def test_stats_rows_of_dropped_databases_count_new_ones(conn):
    # more databases, one after another, than castle.stats has rows (64)
    for n in range(70):
        name = f"castle_growth_{n}"
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
        try:
            with psycopg.connect(dsn(name), autocommit=True) as db:
                db.execute("CREATE EXTENSION castle_sessions")
                db.execute("SELECT castle.is_valid('not a token')")
                row = db.execute("SELECT collecting, refused_malformed FROM castle.stats "
                                 "WHERE datname = current_database()").fetchone()
                assert row == (True, 1), (name, row)
        finally:
            conn.execute(f"DROP DATABASE {name}")
