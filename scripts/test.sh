#!/usr/bin/env bash
# Every test: the codec's unit tests and #[pg_test]s (cargo pgrx test), the
# pg_regress golden files, and the psycopg 3 integration suite against a fresh
# cluster of our own. Exits non-zero on any failure.
source "$(dirname "$0")/common.sh"

"$REPO/scripts/setup.sh"
cd "$REPO"
mkdir -p target

say "cargo pgrx test (unit tests and #[pg_test])"
mkdir -p target/pgrx-test-data && chown postgres target/pgrx-test-data
cargo pgrx test pg15 --runas postgres --pgdata "$REPO/target/pgrx-test-data"

install_extension

say "starting a fresh test cluster (port 54316, castle_sessions and pg_cron preloaded)"
cluster_stop test
rm -rf "$(cluster_root)/test"
cluster_start test 54316 "shared_preload_libraries = 'pg_cron,castle_sessions'" \
    "cron.database_name = 'castle_py'" "cron.use_background_workers = on" \
    "max_worker_processes = 32" "max_connections = 200"
AUDIT_PORT=54320
say "starting an audited cluster (port $AUDIT_PORT, pgaudit preloaded)"
cluster_stop audit
rm -rf "$(cluster_root)/audit"
cluster_start audit $AUDIT_PORT "shared_preload_libraries = 'pgaudit'" "pgaudit.role = 'castle_auditor'" \
    "log_line_prefix = '%m [%p] '"
AUDIT_DIR=$PGDIR
cluster_start test 54316
trap 'cluster_stop test; cluster_stop audit' EXIT

say "pg_regress (tests/pg_regress)"
tests=$(cd tests/pg_regress/sql && ls -1 *.sql | sed 's/\.sql$//' | sort)
rm -rf target/regress && mkdir -p target/regress
if ! "$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress" \
        --inputdir=tests/pg_regress --outputdir=target/regress \
        --host="$PGHOST" --port="$PGPORT" --user=postgres \
        --dbname=castle_regress --load-extension=castle_sessions $tests; then
    cat target/regress/regression.diffs
    exit 1
fi

say "integration suite: psycopg 3 (tests/integration)"
psql_at postgres -c "DROP DATABASE IF EXISTS castle_py" -c "CREATE DATABASE castle_py"
psql_at castle_py -c "CREATE EXTENSION castle_sessions"
PG_BIN="$PG_BIN" CASTLE_CLUSTER_ROOT="$(cluster_root)" CASTLE_CLUSTER_DIR="$PGDIR" \
    CASTLE_AUDIT_PORT=$AUDIT_PORT CASTLE_AUDIT_DIR="$AUDIT_DIR" \
    "$REPO/.venv/bin/pytest" -q -rP -p no:cacheprovider tests/integration
