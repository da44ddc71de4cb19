"""castle_sessions 0.1 from a real client: round trip, refusals, trimming under
concurrency, expiry, settings, tokens from an independent implementation, and
pg_dump/restore."""
import os
import subprocess
import threading
import time

import psycopg
import pytest

import seed_algorithm as seed
from conftest import DB, PG_BIN, create, dsn, user_of, one_server_only, library_only

MESSAGE = "Not a valid session"


def assert_refused(conn, token, message=MESSAGE):
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT * FROM castle.authenticate(%s)", (token,))
    diag = caught.value.diag
    assert caught.value.sqlstate == "28000"
    assert diag.message_primary == message
    assert diag.message_detail is None and diag.message_hint is None
    assert conn.execute("SELECT castle.verify(%s) IS NULL", (token,)).fetchone()[0]


def test_round_trip_for_each_user_id_type(conn):
    import uuid
    u = uuid.uuid4()
    for user, expected in [(42, "42"), (u, str(u)), ("user_abc", "user_abc")]:
        tok = create(conn, user, "1 hour", '{"device": "test"}')
        row = conn.execute("SELECT id, user_id, data, expires_at > now(), used_at FROM castle.authenticate(%s)",
                           (tok,)).fetchone()
        assert row[1] == expected
        assert row[2] == {"device": "test"}
        assert row[3] is True and row[4] is None, "live, and returned as read, before this use"
        for _ in range(500):
            stored = conn.execute("SELECT used_at FROM castle.sessions WHERE id = %s", (row[0],)).fetchone()[0]
            if stored is not None:
                break
            time.sleep(0.02)
        assert stored is not None, "this use was recorded after the statement committed"
        assert seed.split(tok)[0] == row[0], "the token carries the session id"


def test_token_format_matches_the_seed(conn):
    tok = create(conn, "format")
    session_id, secret = seed.split(tok)
    assert len(secret) >= 64 and all(c in seed.ALPHABET for c in secret[:64])
    assert secret == seed.secret_from(secret[:64]), "secret = 64 random characters + decimal crc32"
    assert seed.token(session_id, secret) == tok, "canonical unpadded base64url"
    stored = conn.execute("SELECT hash FROM castle.sessions WHERE id = %s", (session_id,)).fetchone()[0]
    assert stored == seed.stored_hash(secret)


def test_the_known_vector():
    secret = seed.secret_from("A" * 64)
    tok = seed.token(1, secret)
    assert tok.startswith("oat_MQ.QUFB") and tok.endswith("TEwOTU1MjQ5MjQ")
    assert seed.stored_hash(secret).startswith("5c03173b2060")


def test_tokens_from_an_independent_implementation_authenticate(conn):
    base = conn.execute("SELECT coalesce(max(id), 0) + 1000000 FROM castle.sessions").fetchone()[0]
    for i, size in enumerate([22, 64, 100]):
        secret = seed.new_secret(size)
        conn.execute("INSERT INTO castle.sessions (id, hash, user_id) VALUES (%s, %s, %s)",
                     (base + i, seed.stored_hash(secret), f"imported-{i}"))
        assert user_of(conn, seed.token(base + i, secret)) == f"imported-{i}"
        # and one character off is refused
        assert_refused(conn, seed.token(base + i, seed.secret_from(secret[:-11][::-1])))
    # as docs/internals.md's import recipe says: move the id sequence past imported ids
    conn.execute("SELECT setval(pg_get_serial_sequence('castle.sessions', 'id'), max(id)) FROM castle.sessions")


def forged_tokens(conn):
    """(cause, token) for every class of bad token; each must look the same to the client."""
    good = create(conn, "victim", "1 hour")
    sid, secret = seed.split(good)
    other_secret = seed.new_secret()
    b64 = lambda s: seed.b64url(s.encode())  # noqa: E731
    expired = create(conn, "victim", "1 hour")
    conn.execute("UPDATE castle.sessions SET expires_at = now() - interval '1 second' WHERE id = %s",
                 (seed.split(expired)[0],))
    return [
        ("null", None),
        ("empty", ""),
        ("wrong prefix", "xat_" + good[4:]),
        ("missing dot", good.replace(".", "")),
        ("padded base64", good + "=="),
        ("non-canonical base64 id", "oat_MR." + b64(secret)),
        ("id not decimal", "oat_" + b64("1e3") + "." + b64(secret)),
        ("id with sign", "oat_" + b64("+" + str(sid)) + "." + b64(secret)),
        ("id with leading zero", "oat_" + b64("0" + str(sid)) + "." + b64(secret)),
        ("id over bigint", "oat_" + b64(str(2**63)) + "." + b64(secret)),
        ("id zero", "oat_" + b64("0") + "." + b64(other_secret)),
        ("unknown id, valid checksum", seed.token(sid + 10**12, other_secret)),
        ("wrong secret, valid checksum", seed.token(sid, other_secret)),
        ("bad checksum", seed.token(sid, secret[:64] + "1")),
        ("secret outside the alphabet", seed.token(sid, seed.secret_from("!" * 64))),
        ("not utf-8 base64", "oat_" + b64(str(sid)) + "." + seed.b64url(b"\xff" * 70)),
        ("expired", expired),
        ("huge", good + "A" * 1_000_000),
    ]


def test_every_refusal_is_the_same_error(conn):
    cases = forged_tokens(conn)
    for cause, token in cases:
        try:
            assert_refused(conn, token)
        except AssertionError as e:
            raise AssertionError(f"{cause}: {e}") from e


def test_a_changed_invalid_message_is_the_only_message(conn):
    conn.execute("SET castle.invalid_message = 'Session expired or invalid'")
    for _, token in forged_tokens(conn):
        assert_refused(conn, token, "Session expired or invalid")


def test_expiry(conn):
    tok = create(conn, "short-lived", "1 second")
    assert user_of(conn, tok) == "short-lived"
    time.sleep(1.3)
    assert_refused(conn, tok)


def test_trimming_is_exact_under_concurrent_logins():
    user = f"busy-{time.time_ns()}"
    workers, rounds, max_sessions = 6, 15, 3
    barrier = threading.Barrier(workers + 1)
    errors, over_limit, tokens = [], [], []
    done = threading.Event()

    def login_repeatedly():
        try:
            with psycopg.connect(dsn(), autocommit=True) as c:
                barrier.wait()
                for _ in range(rounds):
                    tokens.append(create(c, user))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def watch():
        with psycopg.connect(dsn(), autocommit=True) as c:
            barrier.wait()
            while not done.is_set():
                n = c.execute("SELECT count(*) FROM castle.sessions WHERE user_id = %s", (user,)).fetchone()[0]
                if n > max_sessions:
                    over_limit.append(n)

    threads = [threading.Thread(target=login_repeatedly) for _ in range(workers)]
    watcher = threading.Thread(target=watch)
    for t in threads + [watcher]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not errors, errors
    assert not over_limit, f"a committed state held {max(over_limit)} sessions"
    with psycopg.connect(dsn(), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM castle.sessions WHERE user_id = %s", (user,)).fetchone()[0] == 3
        live = [t for t in tokens if user_of(c, t)]
    assert len(live) == 3 and len(tokens) == workers * rounds


@one_server_only("a routed call commits on its own on the shard (PL/Proxy runs in autocommit), so the caller's snapshot never reaches it")
def test_repeatable_read_sign_in_on_a_stale_snapshot_is_a_serialization_failure():
    """A REPEATABLE READ snapshot taken before another sign-in committed would
    trim by the wrong set of sessions: the sign-in is refused with 40001, and a
    retry keeps the user at the limit."""
    user = f"rr-{time.time_ns()}"
    with psycopg.connect(dsn(), autocommit=True) as a, psycopg.connect(dsn(), autocommit=True) as b:
        create(a, user)
        create(a, user)
        b.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        b.execute("SELECT 1")  # takes the transaction's snapshot: two sessions
        create(a, user)        # a third, committed after it
        with pytest.raises(psycopg.errors.SerializationFailure):
            create(b, user)
        b.execute("ROLLBACK")
        b.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        newest = create(b, user)
        b.execute("COMMIT")
        assert a.execute("SELECT count(*) FROM castle.sessions WHERE user_id = %s", (user,)).fetchone()[0] == 3
        assert user_of(a, newest) == user


@one_server_only("castle.* settings are each shard's own; ALTER DATABASE on the router sets nothing there")
@library_only("the SQL edition reads its settings from castle.settings, never a role's or database's castle.* (tests/managed/test_edition.py)")
def test_settings_from_database_and_role():
    with psycopg.connect(dsn(), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {DB} SET castle.token_prefix = 'db_'")
        admin.execute("CREATE ROLE castle_py_role LOGIN")
        admin.execute("GRANT USAGE ON SCHEMA castle TO castle_py_role")
        admin.execute("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA castle TO castle_py_role")
        admin.execute("ALTER ROLE castle_py_role SET castle.max_sessions = 1")
    try:
        with psycopg.connect(dsn(user="castle_py_role"), autocommit=True) as c:
            first = create(c, "role-limited")
            second = create(c, "role-limited")
            assert first.startswith("db_") and second.startswith("db_")
            assert user_of(c, first) is None and user_of(c, second) == "role-limited"
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT hash FROM castle.sessions")
    finally:
        with psycopg.connect(dsn(), autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {DB} RESET castle.token_prefix")
            admin.execute("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA castle FROM castle_py_role")
            admin.execute("REVOKE USAGE ON SCHEMA castle FROM castle_py_role")
            admin.execute("DROP ROLE castle_py_role")


@library_only('without the library castle.* are placeholders any SET accepts; the SQL edition refuses a bad value in castle.settings (tests/managed/test_edition.py)')
def test_bad_settings_are_refused_when_set(conn):
    for setting, value in [("castle.secret_size", "21"), ("castle.max_sessions", "-1"),
                           ("castle.default_ttl", "-5"), ("castle.token_prefix", "has.dot"),
                           ("castle.invalid_message", ""), ("castle.max_session", "3")]:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(f"SET {setting} = '{value}'")
        assert caught.value.sqlstate in ("22023", "42602"), (setting, caught.value.sqlstate)


def test_secrets_are_distinct_across_backends():
    """The library is preloaded in this cluster: every backend is a fork of the
    postmaster, and must still draw fresh randomness for every token."""
    secrets_seen = set()
    for _ in range(8):
        with psycopg.connect(dsn(), autocommit=True) as c:
            for _ in range(5):
                secrets_seen.add(seed.split(create(c, "fork-check"))[1][:64])
    assert len(secrets_seen) == 40
    alphabet_used = set("".join(secrets_seen))
    assert alphabet_used == set(seed.ALPHABET)


def test_pg_dump_and_restore_keep_tokens_valid(conn, tmp_path):
    tokens = {create(conn, f"dumped-{i}", "1 day"): f"dumped-{i}" for i in range(3)}
    dump = tmp_path / "castle.dump"
    env = dict(os.environ, PGHOST="127.0.0.1", PGUSER="postgres")
    subprocess.run([f"{PG_BIN}/pg_dump", "-Fc", "-f", str(dump), DB], check=True, env=env)
    conn.execute("DROP DATABASE IF EXISTS castle_restored")
    conn.execute("CREATE DATABASE castle_restored")
    subprocess.run([f"{PG_BIN}/pg_restore", "--exit-on-error", "-d", "castle_restored", str(dump)],
                   check=True, env=env)
    with psycopg.connect(dsn("castle_restored"), autocommit=True) as restored:
        for tok, user in tokens.items():
            assert user_of(restored, tok) == user
        # the id sequence came along: a new session does not collide with a restored one
        newest = max(seed.split(t)[0] for t in tokens)
        fresh = create(restored, "after-restore")
        assert seed.split(fresh)[0] > newest and user_of(restored, fresh) == "after-restore"
    conn.execute("DROP DATABASE castle_restored")
