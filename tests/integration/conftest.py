"""A real client (psycopg 3) against the cluster scripts/test.sh started."""
import os

import psycopg
import pytest

PORT = os.environ["PGPORT"]
DB = os.environ.get("CASTLE_TEST_DB", "castle_py")
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
# tests/shards runs the core and lifecycle suites against a router database
# (docs/sharding.md); what holds for one server only says so by name
VIA_ROUTER = os.environ.get("CASTLE_VIA_ROUTER") == "1"


def one_server_only(why):
    return pytest.mark.skipif(VIA_ROUTER, reason=f"one server only, not through the router: {why}")


# scripts/managed.sh runs the shared tests against the SQL edition
# (managed/castle_sessions.sql, docs/managed.md) on a server without our
# library; what needs the library says so by name
EDITION = os.environ.get("CASTLE_EDITION", "extension")


def library_only(why):
    return pytest.mark.skipif(EDITION == "sql", reason=f"the library's own, not the SQL edition's: {why}")


def dsn(dbname=DB, **extra):
    parts = {"host": "127.0.0.1", "port": PORT, "user": "postgres", "dbname": dbname, **extra}
    return " ".join(f"{k}={v}" for k, v in parts.items())


@pytest.fixture
def conn():
    with psycopg.connect(dsn(), autocommit=True) as c:
        yield c


def create(conn, user, ttl=None, data=None):
    return conn.execute("SELECT castle.create_session(%s, %s, %s)", (user, ttl, data)).fetchone()[0]


def user_of(conn, token):
    row = conn.execute("SELECT (castle.verify(%s)).user_id", (token,)).fetchone()
    return row[0]
