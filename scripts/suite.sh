#!/usr/bin/env bash
# The whole suite against one server, CASTLE_TARGET (see common.sh): the
# codec's unit tests and #[pg_test]s (cargo pgrx test), reinstalling under a
# running server, the pg_regress golden files, the isolation specs, and the
# psycopg 3 integration suite against fresh clusters of our own. scripts/test.sh runs it for every target. Exits non-zero on any
# failure, and on any backend crash or failed assertion in the servers' logs.
source "$(dirname "$0")/common.sh"

"$REPO/scripts/setup.sh"
cd "$REPO"
mkdir -p target

install_extension

# pg_cron, where this server has it (not on the assert-enabled builds)
preload=castle_sessions
if [ -f "$("$PG_CONFIG" --pkglibdir)/pg_cron.so" ]; then preload=pg_cron,castle_sessions; fi
export CASTLE_PRELOAD=$preload
say "starting a fresh test cluster (port 25416, $preload preloaded)"
cluster_stop test
rm -rf "$(cluster_root)/test"
cluster_start test 25416 "shared_preload_libraries = '$preload'" \
    "cron.database_name = 'castle_py'" "cron.use_background_workers = on" \
    "max_worker_processes = 32" "max_connections = 200"
AUDIT_PORT=25420
say "starting an audited cluster (port $AUDIT_PORT, pgaudit preloaded)"
cluster_stop audit
rm -rf "$(cluster_root)/audit"
cluster_start audit $AUDIT_PORT "shared_preload_libraries = 'pgaudit'" "pgaudit.role = 'castle_auditor'" \
    "log_line_prefix = '%m [%p] '"
AUDIT_DIR=$PGDIR
cluster_start test 25416
trap 'cluster_stop test; cluster_stop audit' EXIT

# The README's two commands in order leave the tour's cluster running while
# this installs twice into the same PostgreSQL: first cargo pgrx test (its
# test build), then the release. Done here, under the preloaded test cluster
# and a connection holding a session, which must all survive it.
say "cargo pgrx test (unit tests and #[pg_test]) on $("$PG_BIN/postgres" --version), then the release reinstalled, under the running test cluster"
test_data=${CARGO_TARGET_DIR:-$REPO/target}/pgrx-test-data-$CASTLE_TARGET
mkdir -p "$test_data" && chown postgres "$test_data"
# pgrx's test harness would copy its test build over the installed library
# in place: given CARGO_PGRX, it installs through cargo-pgrx-by-rename.
# scripts/test.sh runs the #[pg_test]s and the codec's unit tests once, where
# assertions check them: on the assert-enabled 18 (CASTLE_PGRX_TEST=0 on the
# other passes; see there why).
pgrx_test="CARGO_PGRX='$REPO/scripts/cargo-pgrx-by-rename' cargo pgrx test 'pg$PG_MAJOR' --runas postgres --pgdata '$test_data'"
if [ "${CASTLE_PGRX_TEST:-1}" = 0 ]; then
    echo "skipped: cargo pgrx test on $CASTLE_TARGET: scripts/test.sh runs it once, on the assert-enabled 18 (CASTLE_PGRX_TEST=0); the release is still reinstalled under the running server"
    pgrx_test=true
fi
"$VENV/bin/python" tests/install/reinstall_under_server.py "$PGDIR/server.log" bash -c "
    set -e
    $pgrx_test
    '$REPO/scripts/install.sh' >/dev/null"

# golden_files DRIVER DIR SUBDIR EXTENSION DATABASE: PostgreSQL's regression
# driver (pgxs's pg_regress or pg_isolation_regress) on every
# DIR/SUBDIR/*.EXTENSION, in DATABASE with the extension; prints the diffs on
# a failure
golden_files() {
    local driver=$1 dir=$2 subdir=$3 extension=$4 database=$5 out tests
    out=target/$(basename "$dir")
    tests=$(cd "$dir/$subdir" && ls -1 *."$extension" | sed "s/\.$extension\$//" | sort)
    rm -rf "$out" && mkdir -p "$out"
    # shellcheck disable=SC2086 # one word a test
    if ! "$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/$driver" \
            --bindir="$PG_BIN" --inputdir="$dir" --outputdir="$out" \
            --host="$PGHOST" --port="$PGPORT" --user=postgres \
            --dbname="$database" --load-extension=castle_sessions $tests; then
        cat "$out/regression.diffs"
        exit 1
    fi
}
say "pg_regress (tests/pg_regress)"
golden_files regress/pg_regress tests/pg_regress sql sql castle_regress
say "pg_isolation_regress (tests/isolation)"
golden_files isolation/pg_isolation_regress tests/isolation specs spec castle_isolation

# The same integration suite on the same major twice would be the same work
# twice: scripts/test.sh runs it on Debian's 15 and not again on the
# assert-enabled 15 (CASTLE_INTEGRATION=0), whose assertions the
# assert-enabled 18 gives the suite.
if [ "${CASTLE_INTEGRATION:-1}" = 1 ]; then
    say "integration suite: psycopg 3 (tests/integration)"
    psql_at postgres -c "DROP DATABASE IF EXISTS castle_py" -c "CREATE DATABASE castle_py"
    psql_at castle_py -c "CREATE EXTENSION castle_sessions"
    PG_BIN="$PG_BIN" CASTLE_CLUSTER_ROOT="$(cluster_root)" CASTLE_CLUSTER_DIR="$PGDIR" \
        CASTLE_AUDIT_PORT=$AUDIT_PORT CASTLE_AUDIT_DIR="$AUDIT_DIR" \
        "$VENV/bin/pytest" -q -rfEsP --durations=12 -p no:cacheprovider tests/integration
else
    echo "skipped: the integration suite (tests/integration) on $CASTLE_TARGET: Debian's build of the same major runs it, and the assert-enabled 18 runs it with assertions (CASTLE_INTEGRATION=0)"
fi
# Nothing after this point measures time (the SQL edition skips the
# refusal-timing test): scripts/test.sh, told so, builds the assert-enabled
# servers beside the rest.
if [ -n "${CASTLE_TIMING_DONE:-}" ]; then touch "$CASTLE_TIMING_DONE"; fi

# Shards: castle_sessions_router on PL/Proxy over four shards on two clusters
# of their own, one behind pgbouncer (docs/sharding.md), wherever this
# PostgreSQL has PL/Proxy.
if [ -f "$("$PG_CONFIG" --pkglibdir)/plproxy.so" ]; then
    say "shards: four shards on two clusters and a router on PL/Proxy (tests/shards)"
    PG_BIN="$PG_BIN" CASTLE_CLUSTER_ROOT="$(cluster_root)" \
        "$VENV/bin/pytest" -q -rfEsP --durations=5 -p no:cacheprovider tests/shards
else
    # Debian serves no source of PL/Proxy here (its bookworm 2.10 and sid 2.12
    # source tarballs answer 404), so only Debian's own 15 and 17 have it; the
    # shard side (configure_shard and the rest) runs on every pass, in
    # tests/integration/test_shard.py
    echo "skipped: the router tests (tests/shards): no PL/Proxy for this build ($CASTLE_TARGET): Debian's PL/Proxy source cannot be downloaded here, only its binaries for Debian's own 15 and 17"
fi

# Real frameworks from their registries, over HTTP: on one major only
# (scripts/test.sh sets CASTLE_CLIENT_STACKS=1 for Debian's 15).
if [ "${CASTLE_CLIENT_STACKS:-0}" = 1 ]; then
    say "client stacks: AdonisJS 6 and the recipes of docs/recipes.md: Python, Node.js, Java, Go, Ruby, PHP, stored procedures (tests/clients)"
    # Go's build cache: content-addressed, so kept between runs
    PG_BIN="$PG_BIN" CASTLE_CLUSTER_DIR="$PGDIR" CASTLE_GOCACHE="$REPO/.cache/gocache" \
        "$VENV/bin/pytest" -q -rfEsP --durations=5 -p no:cacheprovider tests/clients
else
    echo "skipped: the client stacks (tests/clients) run on one major, Debian's 15 (CASTLE_CLIENT_STACKS=1)"
fi

# The SQL edition for managed services, on a server without our library
# (scripts/managed.sh): on one major (scripts/test.sh sets it for Debian's 15).
if [ "${CASTLE_SQL_EDITION:-0}" = 1 ]; then
    "$REPO/scripts/managed.sh"
else
    echo "skipped: the SQL edition (scripts/managed.sh) runs on one major, Debian's 15 (CASTLE_SQL_EDITION=1)"
fi

# A crash or a failed Assert() anywhere fails the run, whatever the tests said.
for log in "$(cluster_root)"/{test,audit,replica,noworkers,shards/a,shards/b}/server.log; do
    if [ -f "$log" ] && grep -E "TRAP:|terminated by signal" "$log"; then
        echo "a backend crashed or failed an assertion: $log" >&2
        exit 1
    fi
done

