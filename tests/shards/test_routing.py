"""The router is a drop-in for one server: same answers, same refusal, rows
on the shard their id names (docs/sharding.md)."""
import json
import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import (BOUNCER, PORT_A, PORT_B, ROUTER_DB, SHARDS, connect, shard_conn)

VECTOR = json.loads((Path(__file__).parent / "user_hash_vector.json").read_text())
FORMULA = ("SELECT ('x' || left(encode(sha256(convert_to(%s::{t}::text, getdatabaseencoding())), 'hex'), 8))"
           "::bit(32)::int4")


def refusal(c, sql, *args):
    with pytest.raises(psycopg.Error) as e:
        c.execute(sql, args)
    return e.value.sqlstate, e.value.diag.message_primary


@pytest.fixture(scope="module")
def single(shard_set):
    """One database that is no shard, on the first cluster: the answers to match."""
    with connect(PORT_A, "postgres") as c:
        c.execute("DROP DATABASE IF EXISTS castle_single WITH (FORCE)")
        c.execute("CREATE DATABASE castle_single")
    with connect(PORT_A, "castle_single") as c:
        c.execute("CREATE EXTENSION castle_sessions")
        yield c


def test_user_hash_is_the_shared_vector_on_shards_router_and_in_plain_sql(router):
    with shard_conn(1) as shard:
        for v in VECTOR:
            for c in (router, shard):
                assert c.execute(f"SELECT castle.user_hash(%s::{v['type']})", (v["user_id"],)
                                 ).fetchone()[0] == v["user_hash"], (v, c.info.dbname)
                assert c.execute(FORMULA.format(t=v["type"]), (v["user_id"],)).fetchone()[0] == v["user_hash"]


def test_token_session_id_agrees_and_is_null_for_anything_malformed(router, single):
    token = single.execute("SELECT castle.create_session('tsid')").fetchone()[0]
    sid = single.execute("SELECT (castle.verify(%s)).id", (token,)).fetchone()[0]
    head, secret = token.split(".")
    bad = [None, "", "oat_", "oat_.x", token.replace("oat_", "tok_"), "oat_MA." + secret,  # id 0
           head, head + ".", head + ".sec ret", head + "." + secret + "!",  # no secret, or not base64url
           "oat_MR." + secret,  # 1, but not canonical base64 (MQ is)
           head + "." + "A" * 1500,  # longer than any token
           "oat_LTE." + secret,  # -1
           "oat_OTIyMzM3MjAzNjg1NDc3NTgwOA." + secret,  # 2^63
           "oat_" + "QQ" * 20 + "." + secret, "oat_!!!." + secret, head + "x" * 3000]
    for c in (router, single):
        assert c.execute("SELECT castle.token_session_id(%s)", (token,)).fetchone()[0] == sid
        for b in bad:
            assert c.execute("SELECT castle.token_session_id(%s)", (b,)).fetchone()[0] is None, (b, c.info.dbname)


def test_every_row_sits_on_the_shard_its_id_names(router):
    users = [("bigint", str(n)) for n in range(1, 41)] + [("uuid", str(uuid.uuid4())) for _ in range(20)] \
        + [("text", f"user-{n}@example.com") for n in range(20)]
    for t, u in users:
        router.execute(f"SELECT castle.create_session(%s::{t}, '1 hour')", (u,))
    total = 0
    for partition in range(4):
        with shard_conn(partition) as shard:
            rows = shard.execute("SELECT id & 3, castle.user_hash(user_id) & 3, id & 1023, "
                                 "castle.user_hash(user_id) & 1023 FROM castle.sessions").fetchall()
            assert rows, f"shard {partition} holds no session of 80 users"
            assert all(r[0] == partition and r[1] == partition and r[2] == r[3] for r in rows), partition
            total += len(rows)
    assert total >= len(users)


def test_a_shard_refuses_a_user_it_does_not_own_with_a_clear_error(router):
    # user 42's bucket is 180: partition 0 of 4
    with shard_conn(1) as shard:
        state, message = refusal(shard, "SELECT castle.create_session(42::bigint)")
        assert state == "55000" and "belongs to partition 0" in message
        token = router.execute("SELECT castle.create_session(42::bigint)").fetchone()[0]
        assert router.execute("SELECT castle.is_valid(%s)", (token,)).fetchone()[0] is True
        assert refusal(shard, "SELECT castle.revoke_all(42::bigint)")[0] == "55000"


def test_the_same_answers_through_the_router_as_on_one_server(router, single):
    def story(c, user):
        out = []
        t1 = c.execute("SELECT castle.create_session(%s::text, '1 hour', '{\"device\": \"a\"}')", (user,)).fetchone()[0]
        row = c.execute("SELECT user_id, data, expires_at IS NOT NULL FROM castle.authenticate(%s)", (t1,)).fetchone()
        out.append(row)
        out.append(c.execute("SELECT (castle.verify(%s)).user_id, castle.is_valid(%s)", (t1, t1)).fetchone())
        out.append(refusal(c, "SELECT castle.authenticate(%s)", t1[:-3] + "AAA"))
        out.append(refusal(c, "SELECT castle.authenticate(%s)", "garbage"))
        out.append(refusal(c, "SELECT castle.rotate(%s)", "oat_MQ.nope"))
        out.append(c.execute("SELECT castle.verify(%s) IS NULL, castle.is_valid(%s), castle.revoke(%s)",
                             ("garbage",) * 3).fetchone())
        # NULL itself, not a row of NULLs, to the driver
        out.append(c.execute("SELECT castle.verify(%s)", (t1[:-3] + "AAA",)).fetchone())
        t2 = c.execute("SELECT castle.rotate(%s)", (t1,)).fetchone()[0]
        # within the grace the old token stands for the successor
        out.append(c.execute("SELECT (castle.verify(%s)).id = (castle.verify(%s)).id", (t1, t2)).fetchone())
        out.append(c.execute("SELECT castle.rotate(%s) = %s", (t1, t2)).fetchone())
        others = [c.execute("SELECT castle.create_session(%s::text)", (user,)).fetchone()[0] for _ in range(3)]
        # max_sessions (3): the oldest family went
        out.append(c.execute("SELECT castle.is_valid(%s), castle.is_valid(%s)", (t2, others[-1])).fetchone())
        out.append(c.execute("SELECT count(*) FROM castle.sessions_of(%s::text)", (user,)).fetchone())
        sid = c.execute("SELECT (castle.verify(%s)).id", (others[0],)).fetchone()[0]
        out.append(c.execute("SELECT castle.revoke_session(%s), castle.revoke_session(%s)", (sid, sid)).fetchone())
        out.append(c.execute("SELECT castle.revoke(%s), castle.revoke(%s)", (others[1], others[1])).fetchone())
        with c.transaction():
            me = c.execute("SELECT id FROM castle.login(%s)", (others[2],)).fetchone()[0]
            out.append(c.execute("SELECT castle.user_id(), castle.session_id() = %s", (me,)).fetchone())
            out.append(c.execute("SELECT count(*) FROM castle.sessions_of()").fetchone())
            extra = c.execute("SELECT castle.create_session(%s::text)", (user,)).fetchone()[0]
            out.append(c.execute("SELECT castle.revoke_other_sessions()").fetchone())
            out.append(c.execute("SELECT castle.is_valid(%s)", (extra,)).fetchone())
            out.append(c.execute("SELECT castle.revoke_own_session(%s)", (me,)).fetchone())
        out.append(c.execute("SELECT castle.user_id(), castle.session_id()").fetchone())
        out.append(refusal(c, "SELECT castle.revoke_other_sessions()"))
        out.append(c.execute("SELECT castle.revoke_all(%s::text)", (user,)).fetchone())
        out.append(refusal(c, "SELECT castle.create_session(NULL::text)"))
        out.append(refusal(c, "SELECT castle.rotate(%s, '-1 hour')", t1))
        fresh = c.execute("SELECT castle.create_session(%s::text)", (user,)).fetchone()[0]
        out.append(refusal(c, "SELECT castle.rotate(%s, '-1 hour')", fresh))
        out.append(refusal(c, "SELECT castle.create_session(%s::text, '0 s')", user))
        out.append(refusal(c, "SELECT castle.create_session(''::text)"))
        return out

    assert story(router, "same-answers") == story(single, "same-answers")


def test_a_refusal_through_the_router_is_one_error_on_one_connection(router):
    token = router.execute("SELECT castle.create_session(7::bigint)").fetchone()[0]
    notices = []
    router.add_notice_handler(lambda d: notices.append(d.message_primary))

    def connections_since(started):
        with connect(PORT_A, "postgres") as c:
            return c.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'castle_router' "
                             "AND backend_start > %s", (started,)).fetchone()[0]

    router.execute("SELECT castle.authenticate(%s)", (token,))
    router.execute("SELECT castle.overview()")  # a connection to every shard
    started = router.execute("SELECT clock_timestamp()").fetchone()[0]
    for forged in [token[:-4] + "AAAA", token.split(".")[0] + ".x", "oat_MTIzNDU2Nzg5.abc"] * 10:
        assert refusal(router, "SELECT castle.authenticate(%s)", forged) == ("28000", "Not a valid session")
        assert refusal(router, "SELECT castle.rotate(%s)", forged) == ("28000", "Not a valid session")
    assert router.execute("SELECT (castle.authenticate(%s)).user_id", (token,)).fetchone()[0] == "7"
    assert connections_since(started) == 0, "no reconnect per refusal"
    assert not notices, notices


def test_eight_concurrent_sign_ins_of_one_user_leave_exactly_max_sessions(shard_set):
    tokens, errors = [], []
    barrier = threading.Barrier(8)

    def sign_in():
        try:
            with connect(*shard_set) as c:
                barrier.wait()
                for _ in range(5):
                    tokens.append(c.execute("SELECT castle.create_session('crowd')").fetchone()[0])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=sign_in) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with connect(*shard_set) as c:
        assert c.execute("SELECT count(*) FROM castle.sessions_of('crowd')").fetchone()[0] == 3
        assert sum(c.execute("SELECT castle.is_valid(%s)", (t,)).fetchone()[0] for t in tokens) == 3


def test_login_binds_the_user_for_row_level_security_in_the_router_database(router):
    router.execute("DROP ROLE IF EXISTS router_app")
    router.execute("CREATE ROLE router_app LOGIN")
    router.execute("SELECT castle.grant_request_role('router_app')")
    router.execute("DROP TABLE IF EXISTS notes")
    router.execute("CREATE TABLE notes (owner text, body text)")
    router.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
    router.execute("CREATE POLICY mine ON notes TO router_app USING (owner = castle.user_id())")
    router.execute("GRANT SELECT ON notes TO router_app")
    router.execute("INSERT INTO notes VALUES ('ann', 'ann''s'), ('bob', 'bob''s')")
    ann = router.execute("SELECT castle.create_session('ann')").fetchone()[0]
    with connect(PORT_A, ROUTER_DB, user="router_app") as app:
        with app.transaction():
            app.execute("SELECT castle.login(%s)", (ann,))
            assert app.execute("SELECT body FROM notes").fetchall() == [("ann's",)]
            # a request role cannot forge the binding: the table is the owner's
            for forge in ("INSERT INTO pg_temp.castle_login VALUES ('bob', 1)",
                          "UPDATE pg_temp.castle_login SET user_id = 'bob'"):
                with pytest.raises(psycopg.Error):
                    with app.transaction():
                        app.execute(forge)
            assert app.execute("SELECT body FROM notes").fetchall() == [("ann's",)]
        # gone with the transaction
        assert app.execute("SELECT count(*) FROM notes").fetchone()[0] == 0
        with app.transaction():
            app.execute("SELECT castle.login(%s)", (ann,))
            app.execute("SAVEPOINT s")
            app.execute("SELECT castle.logout()")
            assert app.execute("SELECT castle.user_id()").fetchone()[0] is None
            app.execute("ROLLBACK TO SAVEPOINT s")
            assert app.execute("SELECT castle.user_id()").fetchone()[0] == "ann"
        # the request role signs nobody in
        assert refusal(app, "SELECT castle.create_session('mallory')")[0] == "42501"
    with connect(PORT_A, ROUTER_DB, user="router_app") as hostile:
        # a temporary table of that name made first by another role is refused, never read
        hostile.execute("CREATE TEMP TABLE castle_login (user_id text, session_id bigint)")
        hostile.execute("INSERT INTO castle_login VALUES ('bob', 1)")
        assert refusal(hostile, "SELECT castle.user_id()")[0] == "42501"
        assert refusal(hostile, "SELECT castle.login(%s)", ann)[0] == "42501"
    router.execute("DROP TABLE notes")
    router.execute("DROP OWNED BY router_app")
    router.execute("DROP ROLE router_app")


def test_prune_overview_and_stats_add_up_every_shard(router):
    per_shard = []
    for partition in range(4):
        with shard_conn(partition) as shard:
            shard.execute("UPDATE castle.sessions SET expires_at = now() - interval '1 s' "
                          "WHERE id IN (SELECT id FROM castle.sessions WHERE expires_at IS NOT NULL LIMIT 2)")
            per_shard.append(shard.execute("SELECT live_sessions, users, dead_sessions FROM castle.overview()"
                                           ).fetchone())
    overview = router.execute("SELECT live_sessions, users, dead_sessions FROM castle.overview()").fetchone()
    assert overview[0] > 0 and overview[2] >= 8
    assert list(overview) == [sum(p[i] for p in per_shard) for i in range(3)]
    assert router.execute("SELECT castle.prune()").fetchone()[0] >= 4
    assert router.execute("SELECT dead_sessions FROM castle.overview()").fetchone()[0] == 0
    created = router.execute("SELECT sessions_created FROM castle.stats").fetchone()[0]
    router.execute("SELECT castle.create_session(99::bigint)")
    assert router.execute("SELECT sessions_created FROM castle.stats").fetchone()[0] == created + 1


def test_pg_dump_of_a_shard_restores_with_its_configuration(router, tmp_path, clusters):
    from conftest import PG_BIN
    import subprocess
    dump = tmp_path / "shard_1.dump"
    subprocess.run([f"{PG_BIN}/pg_dump", "-h", "127.0.0.1", "-p", str(PORT_A), "-U", "postgres", "-Fc",
                    "-f", str(dump), "shard_1"], check=True)
    with connect(PORT_A, "postgres") as c:
        c.execute("DROP DATABASE IF EXISTS shard_1_restored WITH (FORCE)")
        c.execute("CREATE DATABASE shard_1_restored")
    subprocess.run([f"{PG_BIN}/pg_restore", "-h", "127.0.0.1", "-p", str(PORT_A), "-U", "postgres",
                    "-d", "shard_1_restored", str(dump)], check=True)
    with shard_conn(1) as old, connect(PORT_A, "shard_1_restored") as new:
        assert new.execute("SELECT partition, partitions FROM castle.shard").fetchone() == (1, 4)
        # a user of partition 1 signs in on the restored shard, with a bucketed id
        user = next(str(n) for n in range(1000)
                    if new.execute("SELECT castle.user_hash(%s::text) & 3", (str(n),)).fetchone()[0] == 1)
        token = new.execute("SELECT castle.create_session(%s::text)", (user,)).fetchone()[0]
        sid = new.execute("SELECT (castle.verify(%s)).id", (token,)).fetchone()[0]
        assert sid & 1023 == new.execute("SELECT castle.user_hash(%s::text) & 1023", (user,)).fetchone()[0]
        assert sid > old.execute("SELECT max(id) FROM castle.sessions").fetchone()[0]
        assert refusal(new, "SELECT castle.create_session(42::bigint)")[0] == "55000"
    with connect(PORT_A, "postgres") as c:
        c.execute("DROP DATABASE shard_1_restored WITH (FORCE)")
