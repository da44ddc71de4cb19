"""Shards on one machine (docs/sharding.md): two clusters of our own, the
second behind Debian's pgbouncer in transaction mode, four shard databases
(p0 and p1 on the first, p2 and p3 on the second through pgbouncer) and a
router database with castle_sessions_router on PL/Proxy.

PG_BIN names the PostgreSQL (with castle_sessions and plproxy installed);
CASTLE_CLUSTER_ROOT a directory the postgres user can reach."""
import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

PG_BIN = os.environ["PG_BIN"]
ROOT = Path(os.environ["CASTLE_CLUSTER_ROOT"]) / "shards"
PORT_A, PORT_B, BOUNCER = 25470, 25471, 25472
ROUTER_ROLE = "castle_router"  # the role the router logs in to the shards as
SHARDS = [(PORT_A, "shard_0"), (PORT_A, "shard_1"), (BOUNCER, "shard_2"), (BOUNCER, "shard_3")]
ROUTER_DB = "castle_router"


def dsn(port, dbname, **extra):
    parts = {"host": "127.0.0.1", "port": port, "user": "postgres", "dbname": dbname, **extra}
    return " ".join(f"{k}={v}" for k, v in parts.items())


def connect(port, dbname, **extra):
    # pgbouncer 1.18 in transaction mode carries no server-side prepared statements
    return psycopg.connect(dsn(port, dbname, **extra), autocommit=True, prepare_threshold=None)


def as_postgres(*cmd):
    subprocess.run(["sudo", "-u", "postgres", *cmd], check=True, stdout=subprocess.DEVNULL)


def wait_for(attempt, seconds=30):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return attempt()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Cluster:
    def __init__(self, name, port):
        self.dir, self.port = ROOT / name, port

    def init(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "sock").mkdir(parents=True)
        shutil.chown(self.dir, "postgres")
        shutil.chown(self.dir / "sock", "postgres")
        as_postgres(f"{PG_BIN}/initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust",
                    "--encoding=UTF8", "--locale=C")
        with open(self.dir / "data" / "postgresql.conf", "a") as conf:
            conf.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.dir}/sock'\nfsync = off\n"
                       "shared_preload_libraries = 'castle_sessions'\nmax_connections = 100\n"
                       "max_worker_processes = 16\n")
        self.start()

    def start(self):
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "server.log"),
                    "-w", "start")

    def stop(self, mode="fast"):
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")

    def log(self):
        return (self.dir / "server.log").read_text(errors="replace")


def start_pgbouncer(port, listen):
    root = ROOT / "pgbouncer"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "userlist.txt").write_text(f'"postgres" ""\n"{ROUTER_ROLE}" ""\n')
    (root / "pgbouncer.ini").write_text(f"""
[databases]
* = host=127.0.0.1 port={port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {root}/userlist.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 200
server_login_retry = 1
server_connect_timeout = 2
query_wait_timeout = 3
ignore_startup_parameters = extra_float_digits
logfile = {root}/pgbouncer.log
pidfile = {root}/pgbouncer.pid
""")
    shutil.chown(root, "postgres")
    for f in root.iterdir():
        shutil.chown(f, "postgres")
    proc = subprocess.Popen(["sudo", "-u", "postgres", "/usr/sbin/pgbouncer", str(root / "pgbouncer.ini")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: connect(listen, "postgres").close())
    return proc


def make_shard(port, dbname, partition, partitions, admin_port=None):
    """A shard database: castle_sessions, the router's role, its place in the set."""
    with connect(admin_port or port, "postgres") as c:
        c.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {dbname}")
        if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROUTER_ROLE,)).fetchone():
            c.execute(f"CREATE ROLE {ROUTER_ROLE} LOGIN")
    with connect(admin_port or port, dbname) as c:
        c.execute("CREATE EXTENSION castle_sessions")
        c.execute(f"SELECT castle.grant_router_role('{ROUTER_ROLE}')")
        if partition is not None:
            c.execute("SELECT castle.configure_shard(%s, %s)", (partition, partitions))


def make_router(port, dbname, shards):
    """A router database over `shards` [(port, dbname)], p0 first."""
    with connect(port, "postgres") as c:
        c.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {dbname}")
    with connect(port, dbname) as c:
        c.execute("CREATE EXTENSION castle_sessions_router CASCADE")
        set_shards(c, shards)
        c.execute(f"CREATE USER MAPPING FOR postgres SERVER castle_shards OPTIONS (user '{ROUTER_ROLE}')")


def set_shards(c, shards):
    """castle_shards names exactly `shards`: created, or its options replaced."""
    options = ", ".join(f"p{i} 'host=127.0.0.1 port={port} dbname={db} connect_timeout=2'"
                        for i, (port, db) in enumerate(shards))
    exists = c.execute("SELECT srvoptions FROM pg_foreign_server WHERE srvname = 'castle_shards'").fetchone()
    if exists is None:
        c.execute("CREATE SERVER castle_shards FOREIGN DATA WRAPPER plproxy "
                  f"OPTIONS (connection_lifetime '1800', query_timeout '10', {options})")
        return
    # one statement: PL/Proxy checks every state the server passes through
    have = {o.split("=")[0] for o in exists[0]}
    want = {f"p{i}": f"host=127.0.0.1 port={port} dbname={db} connect_timeout=2" for i, (port, db) in enumerate(shards)}
    changes = [f"{'SET' if k in have else 'ADD'} {k} '{v}'" for k, v in want.items()]
    changes += [f"DROP {k}" for k in have if k.startswith("p") and k[1:].isdigit() and k not in want]
    c.execute(f"ALTER SERVER castle_shards OPTIONS ({', '.join(changes)})")


@pytest.fixture(scope="session")
def clusters():
    a, b = Cluster("a", PORT_A), Cluster("b", PORT_B)
    a.init()
    b.init()
    bouncer = start_pgbouncer(PORT_B, BOUNCER)
    yield a, b
    bouncer.terminate()
    bouncer.wait(10)
    for cluster in (a, b):
        try:
            cluster.stop()
        except subprocess.CalledProcessError:
            pass
        assert "TRAP:" not in cluster.log() and "terminated by signal" not in cluster.log()


@pytest.fixture(scope="session")
def shard_set(clusters):
    """Four shards and a router; returns the router's port and database."""
    for partition, (port, db) in enumerate(SHARDS):
        make_shard(port, db, partition, len(SHARDS), admin_port=PORT_B if port == BOUNCER else None)
    make_router(PORT_A, ROUTER_DB, SHARDS)
    return PORT_A, ROUTER_DB


@pytest.fixture
def router(shard_set):
    with connect(*shard_set) as c:
        yield c


def shard_conn(partition):
    port, db = SHARDS[partition]
    return connect(PORT_B if port == BOUNCER else port, db)


def copy_rows(src, dst, select, table):
    """COPY (select) from one database into table of another."""
    with src.cursor().copy(f"COPY ({select}) TO STDOUT") as rows, \
            dst.cursor().copy(f"COPY {table} FROM STDIN") as into:
        for data in rows:
            into.write(data)


def split(router, old, new, partition, partitions, router_shards):
    """docs/sharding.md, "Resharding": partition `partition` of
    `partitions // 2` (on database `old`) gives the users of partition
    `partition + partitions // 2` to the new database `new`, and the router
    then names `router_shards`. `old` and `new` are open connections to the
    shards (as their owner)."""
    moving = f"castle.user_hash(user_id) & {partitions - 1} = {partition + partitions // 2}"
    # 1. the new database, which nothing calls before step 4
    new.execute("CREATE EXTENSION IF NOT EXISTS castle_sessions")
    new.execute(f"SELECT castle.grant_router_role('{ROUTER_ROLE}')")
    # 2. the old shard keeps only its half: from now on it refuses to sign in,
    #    rotate or revoke for the moving users (55000), and still answers checks
    old.execute("SELECT castle.configure_shard(%s, %s)", (partition, partitions))
    # 3. their rows and the rotation keys; the new shard's ids start past the
    #    old one's, and it takes its half
    copy_rows(old, new, f"SELECT * FROM castle.sessions WHERE {moving}", "castle.sessions")
    copy_rows(old, new, "SELECT * FROM castle.rotation_keys", "castle.rotation_keys")
    last = old.execute("SELECT last_value FROM castle.sessions_id_seq").fetchone()[0]
    new.execute("SELECT setval('castle.sessions_id_seq', %s)", (last,))
    new.execute("SELECT castle.configure_shard(%s, %s)", (partition + partitions // 2, partitions))
    # 4. the router sends them to the new shard, once every call routed
    #    before the change has ended: the time is taken after the change
    #    commits (a call begun before that reads the old map)
    set_shards(router, router_shards)
    changed = router.execute("SELECT clock_timestamp()").fetchone()[0]
    router.execute("SELECT castle_router.wait_for_calls_before(%s)", (changed,))
    # 5. the old shard forgets them
    old.execute(f"DELETE FROM castle.sessions WHERE {moving}")


def with_sessions_table(port, dbname, shards):
    """For the integration suites run through a router: castle.sessions in
    the router database as the shards' tables (postgres_fdw partitions by
    id & 3), so that their checks of what is stored read the shards."""
    with connect(port, dbname) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
        c.execute("CREATE TABLE castle.sessions (id bigint NOT NULL, hash text NOT NULL, "
                  "user_id text COLLATE \"C\" NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), "
                  "updated_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz, used_at timestamptz, "
                  "data jsonb, family_id bigint, rotated_at timestamptz) PARTITION BY LIST ((id & 3))")
        for partition, (shard_port, db) in enumerate(shards):
            c.execute(f"CREATE SERVER sessions_{partition} FOREIGN DATA WRAPPER postgres_fdw "
                      f"OPTIONS (host '127.0.0.1', port '{shard_port}', dbname '{db}')")
            c.execute(f"CREATE USER MAPPING FOR postgres SERVER sessions_{partition} OPTIONS (user 'postgres')")
            c.execute(f"CREATE FOREIGN TABLE castle.sessions_{partition} PARTITION OF castle.sessions "
                      f"FOR VALUES IN ({partition}) SERVER sessions_{partition} "
                      "OPTIONS (schema_name 'castle', table_name 'sessions')")
