"""A database as one shard of a set (docs/sharding.md), on one server: what
castle_sessions itself does, on every pass (the router and PL/Proxy are in
tests/shards)."""
import json
from pathlib import Path

import psycopg
import pytest

from conftest import create, dsn, user_of

VECTOR = json.loads((Path(__file__).parents[1] / "shards" / "user_hash_vector.json").read_text())


@pytest.fixture
def shard(conn):
    conn.execute("DROP DATABASE IF EXISTS castle_shard WITH (FORCE)")
    conn.execute("CREATE DATABASE castle_shard")
    with psycopg.connect(dsn("castle_shard"), autocommit=True) as c:
        c.execute("CREATE EXTENSION castle_sessions")
        yield c
    conn.execute("DROP DATABASE castle_shard WITH (FORCE)")


def user_of_partition(c, partition, partitions, start=0):
    return next(str(n) for n in range(start, start + 10_000)
                if c.execute("SELECT castle.user_hash(%s::text) & %s", (str(n), partitions - 1)
                             ).fetchone()[0] == partition)


def session_id(c, token):
    return c.execute("SELECT castle.token_session_id(%s)", (token,)).fetchone()[0]


def test_user_hash_is_the_shared_vector(conn):
    for v in VECTOR:
        assert conn.execute(f"SELECT castle.user_hash(%s::{v['type']})", (v["user_id"],)).fetchone()[0] \
            == v["user_hash"], v


def test_token_session_id_reads_the_id_from_the_token_alone(conn):
    token = create(conn, "tsid-user")
    assert session_id(conn, token) == conn.execute("SELECT (castle.verify(%s)).id", (token,)).fetchone()[0]
    for bad in (None, "", "oat_", "oat_MA.x", token.replace("oat_", "xyz_"), token.split(".")[0]):
        assert session_id(conn, bad) is None, bad


def test_unconfigured_ids_are_the_identity_as_before(shard):
    first, second = (session_id(shard, create(shard, f"u{n}")) for n in range(2))
    assert second == first + 1
    assert shard.execute("SELECT count(*) FROM castle.shard").fetchone()[0] == 0


def test_configure_shard_checks_its_arguments(shard):
    for args, state in [((0, 3), "22023"), ((2, 2), "22023"), ((-1, 2), "22023"), ((0, 2048), "22023"),
                        ((None, 2), "22004")]:
        with pytest.raises(psycopg.Error) as e:
            shard.execute("SELECT castle.configure_shard(%s, %s)", args)
        assert e.value.sqlstate == state, args


def test_a_shard_issues_bucketed_ids_and_refuses_users_it_does_not_own(shard):
    before = create(shard, "before-sharding")
    shard.execute("SELECT castle.configure_shard(1, 4)")
    assert shard.execute("SELECT partition, partitions FROM castle.shard").fetchone() == (1, 4)
    mine, theirs = user_of_partition(shard, 1, 4), user_of_partition(shard, 2, 4)
    token = create(shard, mine)
    sid = session_id(shard, token)
    bucket = shard.execute("SELECT castle.user_hash(%s::text) & 1023", (mine,)).fetchone()[0]
    assert sid & 1023 == bucket and sid & 3 == 1
    assert sid > session_id(shard, before)
    assert user_of(shard, before) == "before-sharding"  # issued before: still valid
    for call, args in [("SELECT castle.create_session(%s::text)", (theirs,)),
                       ("SELECT castle.revoke_all(%s::text)", (theirs,))]:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as e:
            shard.execute(call, args)
        assert "belongs to partition 2" in str(e.value)
    # with max_sessions = 0 no user is locked, and the shard still refuses
    shard.execute("SET castle.max_sessions = 0")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        create(shard, theirs)
    rotated = shard.execute("SELECT castle.rotate(%s)", (token,)).fetchone()[0]
    assert session_id(shard, rotated) & 1023 == bucket


def test_every_backend_sees_a_new_configuration_and_in_flight_sign_ins_finish_first(shard):
    p0, p1 = user_of_partition(shard, 0, 2), user_of_partition(shard, 1, 2)
    with psycopg.connect(dsn("castle_shard"), autocommit=True) as other:
        create(other, p1)  # this backend has read the configuration: none
        with psycopg.connect(dsn("castle_shard")) as in_flight:
            create(in_flight, p0)  # a sign-in not yet committed
            shard.execute("SET lock_timeout = '300ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                shard.execute("SELECT castle.configure_shard(0, 2)")
            # a DBA's own change waits the same way (the table's trigger)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                shard.execute("UPDATE castle.shard SET partition = 0")
            in_flight.commit()
        shard.execute("RESET lock_timeout")
        shard.execute("SELECT castle.configure_shard(0, 2)")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            create(other, p1)
        assert session_id(other, create(other, p0)) & 1 == 0
        # and a DBA's own change reaches it too
        shard.execute("UPDATE castle.shard SET partition = 1")
        assert session_id(other, create(other, p1)) & 1 == 1
