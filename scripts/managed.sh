#!/usr/bin/env bash
# The SQL edition (managed/castle_sessions.sql, docs/managed.md) on a server
# our library is not installed in, installed by a database owner who is not a
# superuser, as on a managed service:
#   1. managed/castle_sessions.sql is what scripts/common.sh builds from
#      managed/castle_sessions.in.sql and the extension's shared SQL;
#   2. the pg_regress golden files of tests/pg_regress, with the differences
#      the edition has on purpose written in tests/managed/pg_regress.patch;
#   3. the shared integration tests (tests/integration: what needs the
#      library skips by name) and the edition's own (tests/managed), which
#      also move sessions to and from the extension's test cluster.
# scripts/suite.sh runs it on Debian's 15 (one major, as the client stacks):
# the server is the machine's own Debian PostgreSQL 15, which scripts/setup.sh
# installs and nothing here installs our library into.
# `scripts/managed.sh --build` only rebuilds managed/castle_sessions.sql.
source "$(dirname "$0")/common.sh"
cd "$REPO"

built=$(mktemp)
trap 'rm -f "$built"' EXIT
managed_edition "$built"
if [ "${1:-}" = --build ]; then
    cp "$built" managed/castle_sessions.sql
    echo "built managed/castle_sessions.sql"
    exit 0
fi
if ! cmp -s "$built" managed/castle_sessions.sql; then
    diff -u managed/castle_sessions.sql "$built" | head -40
    echo "managed/castle_sessions.sql is not what its sources build: run scripts/managed.sh --build" >&2
    exit 1
fi

# the extension's test cluster (scripts/suite.sh), for moves between editions
EXTENSION_PORT=$PGPORT EXTENSION_HOST=$PGHOST EXTENSION_BIN=$PG_BIN
PG_BIN=/usr/lib/postgresql/15/bin
if [ -e "$("$PG_BIN/pg_config" --pkglibdir)/castle_sessions.so" ] ||
   [ -e "$("$PG_BIN/pg_config" --sharedir)/extension/castle_sessions.control" ]; then
    echo "castle_sessions is installed in $PG_BIN's PostgreSQL: the SQL edition is tested where it is not" >&2
    exit 1
fi
PORT=25430
say "SQL edition: a cluster of the machine's own PostgreSQL 15, without our library (port $PORT)"
cluster_stop managed
rm -rf "$(cluster_root)/managed"
# pg_cron, as managed services offer it (the prune recipe's test)
cluster_start managed $PORT "password_encryption = 'scram-sha-256'" \
    "shared_preload_libraries = 'pg_cron'" "cron.database_name = 'castle_py'"
# as a managed service does: a password for the loopback role dblink logs in as
{
    echo "host all castle_revoker 127.0.0.1/32 scram-sha-256"
    echo "host all all 127.0.0.1/32 trust"
    echo "host replication all 127.0.0.1/32 trust"
    echo "local all all trust"
} >"$PGDIR/data/pg_hba.conf"
sudo -u postgres "$PG_BIN/pg_ctl" -D "$PGDIR/data" reload >/dev/null
MANAGED_DIR=$PGDIR
trap 'rm -f "$built"; cluster_stop managed' EXIT

# database DB: owned by castle_owner (CREATEROLE, not a superuser: what RDS,
# Cloud SQL, Azure and Supabase give), dblink created as the service would,
# then the edition installed by the owner from the one file
edition_database() {
    psql_at postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1 OWNER castle_owner"
    psql_at "$1" -c "CREATE EXTENSION dblink"
    psql_at "$1" -U castle_owner -1 -f managed/castle_sessions.sql
    psql_at "$1" -U castle_owner -c "CALL castle.use_dblink()"
}
psql_at postgres -c "CREATE ROLE castle_owner LOGIN CREATEROLE"

say "SQL edition: pg_regress (tests/pg_regress, with tests/managed/pg_regress.patch)"
edition_database castle_regress
regress=target/managed_regress
rm -rf "$regress" && mkdir -p "$regress"
cp -r tests/pg_regress/sql tests/pg_regress/expected "$regress/"
# what is the library's alone: its catalog (api), its checks of a DBA's DDL
# (dba_changes), its scan for the functions in FROM (row_scan) and its
# settings' validation when set (settings)
for test in api dba_changes row_scan settings; do
    rm "$regress/sql/$test.sql" "$regress/expected/$test.out"
    echo "skipped for the SQL edition: pg_regress $test (the library's own: docs/managed.md)"
done
(cd "$regress" && patch -s -p1 --no-backup-if-mismatch) <tests/managed/pg_regress.patch
tests=$(cd "$regress/sql" && ls -1 *.sql | sed 's/\.sql$//' | sort)
# shellcheck disable=SC2086 # one word a test
if ! "$("$PG_BIN/pg_config" --pkglibdir)/pgxs/src/test/regress/pg_regress" \
        --bindir="$PG_BIN" --inputdir="$regress" --outputdir="$regress/out" \
        --host="$PGHOST" --port="$PGPORT" --user=postgres --dbname=castle_regress --use-existing $tests; then
    cat "$regress/out/regression.diffs"
    exit 1
fi

say "SQL edition: integration tests (tests/integration, tests/managed)"
edition_database castle_py
PG_BIN="$PG_BIN" CASTLE_EDITION=sql CASTLE_CLUSTER_ROOT="$(cluster_root)" CASTLE_CLUSTER_DIR="$MANAGED_DIR" \
    CASTLE_EXTENSION_PORT="$EXTENSION_PORT" CASTLE_EXTENSION_BIN="$EXTENSION_BIN" \
    "$VENV/bin/pytest" -q -rfEsP --durations=5 -p no:cacheprovider \
    tests/integration/test_core.py tests/integration/test_lifecycle.py tests/integration/test_rotation.py \
    tests/integration/test_context.py tests/managed

if grep -E "TRAP:|terminated by signal" "$MANAGED_DIR/server.log"; then
    echo "a backend crashed: $MANAGED_DIR/server.log" >&2
    exit 1
fi
