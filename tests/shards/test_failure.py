"""One shard down (docs/sharding.md, "When a shard is down"): its users get
an error that is not a refusal (the application answers 503, not 401),
everyone else goes on, and the router reconnects by itself when it returns.
The second cluster (partitions 2 and 3, behind pgbouncer) is stopped
mid-run."""
import threading
import time

import psycopg
import pytest

from conftest import connect


def tokens_by_partition(router, per_partition=4):
    out = {p: [] for p in range(4)}
    n = 20_000
    while min(len(v) for v in out.values()) < per_partition:
        n += 1
        token = router.execute("SELECT castle.create_session(%s::bigint, '1 hour')", (n,)).fetchone()[0]
        partition = router.execute("SELECT castle.token_session_id(%s) & 3", (token,)).fetchone()[0]
        out[partition].append((n, token))
    return out


def test_a_shard_down_is_an_outage_for_its_users_only_and_the_router_reconnects(shard_set, clusters):
    _, b = clusters
    with connect(*shard_set) as router:
        tokens = tokens_by_partition(router)
        up = tokens[0] + tokens[1]
        down = tokens[2] + tokens[3]
        for user, token in up + down:
            assert router.execute("SELECT (castle.authenticate(%s)).user_id", (token,)).fetchone()[0] == str(user)
        stop, others = threading.Event(), []

        def other_users():  # partitions 0 and 1, all along
            with connect(*shard_set) as c:
                while not stop.is_set():
                    for user, token in up:
                        try:
                            assert c.execute("SELECT (castle.authenticate(%s)).user_id", (token,)
                                             ).fetchone()[0] == str(user)
                        except (psycopg.Error, AssertionError) as e:
                            others.append(repr(e))
        load = threading.Thread(target=other_users)
        load.start()
        try:
            time.sleep(0.5)
            b.stop("immediate")
            for user, token in down:
                for call in ("SELECT castle.authenticate(%s)", "SELECT castle.verify(%s)",
                             "SELECT castle.is_valid(%s)", "SELECT castle.revoke(%s)"):
                    started = time.monotonic()
                    with pytest.raises(psycopg.Error) as e:
                        router.execute(call, (token,))
                    assert e.value.sqlstate != "28000", (call, e.value.sqlstate, str(e.value))
                    told = " ".join(str(x) for x in (e.value, e.value.diag.context, e.value.diag.message_detail))
                    assert token.split(".")[1] not in told
                    assert time.monotonic() - started < 15
                with pytest.raises(psycopg.Error) as e:
                    router.execute("SELECT castle.create_session(%s::bigint)", (user,))
                assert e.value.sqlstate != "28000"
            # the other shards sign in as usual
            for user, _ in up:
                router.execute("SELECT castle.create_session(%s::bigint)", (user,))
            b.start()
            deadline = time.monotonic() + 30
            while True:
                try:
                    for user, token in down:
                        assert router.execute("SELECT (castle.authenticate(%s)).user_id", (token,)
                                              ).fetchone()[0] == str(user)
                    break
                except psycopg.Error as e:
                    assert e.sqlstate != "28000"
                    assert time.monotonic() < deadline, "the router did not reconnect"
                    time.sleep(0.5)
        finally:
            stop.set()
            load.join()
            if not (b.dir / "data" / "postmaster.pid").exists():
                b.start()
        assert not others, others[:3]
