"""monitoring/castle_sessions.yaml in the real prometheus-postgres-exporter
(Debian's package), scraped over HTTP as Prometheus would: its counters
follow sign-ins, authentications and refusals, read by a role that is no
more than a member of pg_monitor. And castle.stats is closed to others."""
import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

import seed_algorithm as seed
from conftest import DB, PORT, create, dsn

EXPORTER = "/usr/bin/prometheus-postgres-exporter"
QUERIES = Path(__file__).resolve().parents[2] / "monitoring" / "castle_sessions.yaml"
LISTEN = ("127.0.0.1", 25423)
MONITOR = "castle_prom"
OUTSIDER = "castle_prom_outsider"
# urllib would honour http_proxy from the environment; this request is local.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SAMPLE = re.compile(r"^(castle_\w+)\{(.*)\} (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@pytest.fixture
def monitor_role(conn):
    conn.execute(f"DROP ROLE IF EXISTS {MONITOR}")
    conn.execute(f"CREATE ROLE {MONITOR} LOGIN IN ROLE pg_monitor")
    yield MONITOR
    conn.execute(f"DROP ROLE {MONITOR}")


@pytest.fixture
def exporter(monitor_role, tmp_path):
    """The base URL of an exporter that reads the test database as monitor_role."""
    if not os.access(EXPORTER, os.X_OK):
        pytest.fail(f"{EXPORTER} is missing: scripts/setup.sh installs prometheus-postgres-exporter")
    with socket.socket() as s:
        if s.connect_ex(LISTEN) == 0:
            pytest.fail(f"something already listens on {LISTEN[0]}:{LISTEN[1]}, the exporter's port")
    log = tmp_path / "exporter.log"
    # lib/pq asks for TLS unless told not to; the test cluster has none. A
    # clean environment: lib/pq would read PGHOST and the like.
    env = {"PATH": "/usr/bin:/bin",
           "DATA_SOURCE_NAME": f"postgresql://{monitor_role}@127.0.0.1:{PORT}/{DB}?sslmode=disable"}
    # flags both Debian 12's 0.11 and Debian 13's 0.17 know
    cmd = [EXPORTER, f"--extend.query-path={QUERIES}", f"--web.listen-address={LISTEN[0]}:{LISTEN[1]}",
           "--disable-default-metrics", "--disable-settings-metrics"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://{LISTEN[0]}:{LISTEN[1]}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with HTTP.open(base + "/metrics", timeout=10):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the exporter did not answer on {base}/metrics:\n{log.read_text()}")
                time.sleep(0.1)
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scrape(exporter):
    """{metric name: value} of the castle samples for the test database."""
    base, log = exporter
    with HTTP.open(base + "/metrics", timeout=10) as r:
        body = r.read().decode()
    # a failed query shows only here and in the log, not as an HTTP error
    assert "\npg_up 1\n" in body and "\npg_exporter_last_scrape_error 0\n" in body, log.read_text()
    samples = {}
    for line in body.splitlines():
        m = SAMPLE.match(line)
        if m and dict(LABEL.findall(m.group(2))).get("datname") == DB:
            samples[m.group(1)] = float(m.group(3))
    return samples


def refused(conn, token):
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
        conn.execute("SELECT castle.authenticate(%s)", (token,))


def test_counters_follow_sign_ins_and_refusals(conn, exporter):
    assert conn.execute("SELECT collecting FROM castle.stats WHERE datname = current_database()"
                        ).fetchone() == (True,), f"castle.stats does not collect for {DB}"
    before = scrape(exporter)
    for gauge in ("live_sessions", "users", "dead_sessions", "rotated_sessions", "oldest_live_timestamp_seconds"):
        assert f"castle_overview_{gauge}" in before, sorted(before)

    users = [f"prom-user-{i}" for i in range(3)]
    tokens = [create(conn, u) for u in users]
    for tok in tokens:
        conn.execute("SELECT castle.authenticate(%s)", (tok,))
    refused(conn, "oat_nope")
    # well-formed, but not the secret of that (live) session
    refused(conn, seed.token(seed.split(tokens[0])[0], seed.new_secret()))
    # a signed-out session's token names no session any more
    gone = create(conn, "prom-user-gone")
    assert conn.execute("SELECT castle.revoke(%s)", (gone,)).fetchone()[0] is True
    refused(conn, gone)

    # other tests count too, and before this one: deltas, at least
    expected = {"sessions_created": 4, "authentications": 3, "refused_malformed": 1,
                "refused_wrong_secret": 1, "refused_unknown_id": 1, "revoked_by_token": 1}
    after = scrape(exporter)  # shared-memory atomics: counted at once, no flush to wait for
    short = {k: (after.get(f"castle_stats_{k}_total", 0) - before.get(f"castle_stats_{k}_total", 0), n)
             for k, n in expected.items()}
    short = {k: v for k, v in short.items() if v[0] < v[1]}
    assert not short, f"counters that moved less than expected, as (moved, expected): {short}"
    for u in users:
        conn.execute("SELECT castle.revoke_all(%s)", (u,))


def test_only_pg_monitor_reads_the_statistics(conn, monitor_role):
    with psycopg.connect(dsn(user=monitor_role), autocommit=True) as monitor:
        assert monitor.execute("SELECT count(*) FROM castle.stats").fetchone()[0] >= 1
        assert len(monitor.execute("SELECT * FROM castle.overview()").fetchall()) == 1
    conn.execute(f"DROP ROLE IF EXISTS {OUTSIDER}")
    conn.execute(f"CREATE ROLE {OUTSIDER} LOGIN")
    try:
        with psycopg.connect(dsn(user=OUTSIDER), autocommit=True) as outsider:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                outsider.execute("SELECT * FROM castle.stats")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                outsider.execute("SELECT * FROM castle.overview()")
    finally:
        conn.execute(f"DROP ROLE {OUTSIDER}")
