"""Resharding while requests flow (docs/sharding.md, "Resharding"), and a
database that was never sharded split into shards ("From one database to
shards"): no token changes or stops working, nothing is lost, exactly the
moving buckets' rows move, max_sessions holds."""
import random
import threading
import time

import psycopg

from conftest import (BOUNCER, PORT_A, PORT_B, connect, copy_rows, make_router, make_shard, set_shards, split)

MAX_SESSIONS = 3
COLUMNS = "id, hash, user_id, created_at, expires_at, data, family_id, rotated_at"


class Load:
    """Workers through the router, each owning its users, so that what must
    be valid is known exactly: a user's live sessions, the newest
    MAX_SESSIONS kept at each sign-in, less those it signed out."""

    def __init__(self, router, users, workers=4):
        self.router, self.stop, self.failures = router, threading.Event(), []
        self.deferred = 0  # writes a moving shard refused (55000): the app answers 503, retries later
        self.tokens = {u: [] for u in users}  # user -> every token issued
        self.live = {u: [] for u in users}  # user -> the live ones, oldest first
        self.checks = 0
        owned = [users[i::workers] for i in range(workers)]
        self.threads = [threading.Thread(target=self.work, args=(mine,)) for mine in owned]

    def valid(self, user):
        return self.live[user]

    def work(self, users):
        rng = random.Random(len(users))
        with connect(*self.router) as c:
            while not self.stop.is_set():
                user = rng.choice(users)
                op = rng.random()
                try:
                    if op < 0.6 and self.valid(user):
                        token = rng.choice(self.valid(user))
                        got = c.execute("SELECT (castle.authenticate(%s)).user_id", (token,)).fetchone()[0]
                        assert got == str(user)
                        self.checks += 1
                    elif op < 0.9:
                        token = c.execute("SELECT castle.create_session(%s::bigint)", (user,)).fetchone()[0]
                        self.tokens[user].append(token)
                        self.live[user] = (self.live[user] + [token])[-MAX_SESSIONS:]
                    elif self.valid(user):
                        token = rng.choice(self.valid(user))
                        assert c.execute("SELECT castle.revoke(%s)", (token,)).fetchone()[0] is True
                        self.live[user].remove(token)
                except psycopg.Error as e:
                    if e.sqlstate == "55000":
                        self.deferred += 1
                    else:
                        self.failures.append((user, e.sqlstate, str(e)))
                except AssertionError as e:
                    self.failures.append((user, "assert", repr(e)))

    def __enter__(self):
        for t in self.threads:
            t.start()
        time.sleep(1.5)
        return self

    def __exit__(self, *exc):
        time.sleep(1.5)
        self.stop.set()
        for t in self.threads:
            t.join()


def rows_by_shard(shards):
    out = {}
    for partition, c in enumerate(shards):
        for row in c.execute(f"SELECT {COLUMNS}, castle.user_hash(user_id) FROM castle.sessions").fetchall():
            out[row[0]] = (partition, row[:-1], row[-1])
    return out


def open_shard(port, db):
    return connect(PORT_B if port == BOUNCER else port, db)


def test_two_shards_become_four_while_requests_flow(clusters):
    two = [(PORT_A, "rs_0"), (BOUNCER, "rs_1")]
    four = two + [(PORT_A, "rs_2"), (BOUNCER, "rs_3")]
    for partition, (port, db) in enumerate(two):
        make_shard(port, db, partition, 2, admin_port=PORT_B if port == BOUNCER else None)
    for port, db in four[2:]:
        make_shard(port, db, None, None, admin_port=PORT_B if port == BOUNCER else None)
    make_router(PORT_A, "rs_router", two)
    with connect(PORT_A, "rs_router") as router:
        # users nobody touches during the move: their rows must arrive as they were
        quiet = {u: router.execute("SELECT castle.create_session(%s::bigint, '1 day', %s)",
                                   (u, f'{{"n": {u}}}')).fetchone()[0] for u in range(10_000, 10_060)}
        shards = [open_shard(*s) for s in four]
        before = rows_by_shard(shards[:2])
        busy = list(range(1, 121))
        with Load((PORT_A, "rs_router"), busy) as load:
            # one shard at a time: until p1 splits, partition 3 is p1 again
            split(router, shards[0], shards[2], 0, 4, [four[0], four[1], four[2], four[1]])
            time.sleep(0.5)
            split(router, shards[1], shards[3], 1, 4, four)
        assert not load.failures, load.failures[:5]
        assert load.checks > 100
        after = rows_by_shard(shards)
        # every row on the shard its user's bucket names; bucketed ids name it too
        for sid, (partition, row, user_hash) in after.items():
            assert user_hash & 3 == partition and sid & 3 == partition, (sid, partition)
        # the quiet users' rows moved (or stayed) exactly as they were
        for sid, (partition, row, user_hash) in before.items():
            if int(row[2]) >= 10_000:
                assert after[sid][1] == row
                assert after[sid][0] == user_hash & 3
        moved = sum(1 for sid, (p, row, h) in before.items() if int(row[2]) >= 10_000 and h & 3 != p)
        assert 10 < moved < 50, "about half the quiet users' rows changed shard"
        # nothing lost, nothing revived, max_sessions held
        for user in busy:
            want = load.valid(user)
            for token in load.tokens[user]:
                valid = router.execute("SELECT castle.is_valid(%s)", (token,)).fetchone()[0]
                assert valid == (token in want), (user, token in want)
            assert router.execute("SELECT count(*) FROM castle.sessions_of(%s::bigint)", (user,)
                                  ).fetchone()[0] == len(want)
        for user, token in quiet.items():
            assert router.execute("SELECT (castle.authenticate(%s)).user_id", (token,)).fetchone()[0] == str(user)
        print(f"checks {load.checks}, writes deferred during the moves {load.deferred}")
        for c in shards:
            c.close()


def test_a_database_that_was_never_sharded_splits_into_shards(clusters):
    """Ids issued before configure_shard carry no bucket: the router finds
    them in castle_router.legacy_sessions."""
    make_shard(PORT_A, "legacy_0", None, None)
    make_shard(PORT_B, "legacy_1", None, None)
    with connect(PORT_A, "legacy_0") as old, connect(PORT_B, "legacy_1") as new:
        tokens = {u: [old.execute("SELECT castle.create_session(%s::bigint, '1 day')", (u,)).fetchone()[0]
                      for _ in range(2)] for u in range(1, 81)}
        # the database becomes partition 0 of 2 and the router learns its ids
        make_router(PORT_A, "legacy_router", [(PORT_A, "legacy_0"), (PORT_A, "legacy_0")])
        with connect(PORT_A, "legacy_router") as router:
            old.execute("SELECT castle.configure_shard(0, 1)")
            copy_rows(old, router, "SELECT id, castle.user_hash(user_id) & 1023 FROM castle.sessions",
                      "castle_router.legacy_sessions")
            split(router, old, new, 0, 2, [(PORT_A, "legacy_0"), (BOUNCER, "legacy_1")])
            assert new.execute("SELECT count(*) FROM castle.sessions").fetchone()[0] > 40
            for user, pair in tokens.items():
                for token in pair:
                    assert router.execute("SELECT (castle.authenticate(%s)).user_id", (token,)
                                          ).fetchone()[0] == str(user)
            # the old tokens rotate, sign out and trim as before
            user, (first, second) = next(iter(tokens.items()))
            rotated = router.execute("SELECT castle.rotate(%s)", (first,)).fetchone()[0]
            assert router.execute("SELECT castle.token_session_id(%s) & 1023 = castle.user_hash(%s::bigint) & 1023",
                                  (rotated, user)).fetchone()[0] is True
            assert router.execute("SELECT castle.revoke(%s)", (second,)).fetchone()[0] is True
            for _ in range(3):
                router.execute("SELECT castle.create_session(%s::bigint)", (user,))
            assert router.execute("SELECT count(*) FROM castle.sessions_of(%s::bigint)", (user,)).fetchone()[0] == 3
            assert router.execute("SELECT castle.is_valid(%s)", (rotated,)).fetchone()[0] is False
