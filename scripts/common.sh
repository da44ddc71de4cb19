# Shared by every script: paths, and the throwaway clusters this repo starts.
# Source it; do not run it.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Debian's PostgreSQL 15, or with CASTLE_PG_PREFIX the one installed there
# (scripts/cassert.sh's assert-enabled build), with pgrx and cargo kept apart
# for it so that neither build invalidates the other.
if [ -n "${CASTLE_PG_PREFIX:-}" ]; then
    PG_BIN=$CASTLE_PG_PREFIX/bin
    PG_CONFIG=$CASTLE_PG_PREFIX/bin/pg_config
    export PGRX_HOME=$REPO/.cache/pgrx-cassert CARGO_TARGET_DIR=$REPO/target/cassert
else
    PG_BIN=/usr/lib/postgresql/15/bin
    PG_CONFIG=/usr/bin/pg_config
fi
export PATH="$HOME/.cargo/bin:$PATH"

# Clusters live in the repo (.cluster/NAME), owned by the postgres OS user
# because initdb refuses root. If postgres cannot reach the checkout (a home
# folder that is 0700), or the socket path would be too long, they live under
# /tmp instead.
cluster_root() {
    local root="$REPO/.cluster"
    mkdir -p "$root"
    chmod 755 "$root"
    if [ ${#root} -gt 70 ] || ! sudo -u postgres test -x "$root"; then
        root=/tmp/castle_sessions-clusters
        mkdir -p "$root" && chmod 755 "$root"
    fi
    echo "$root"
}

say() { printf '\033[1m== %s\033[0m\n' "$*"; }

# cluster_start NAME PORT [postgresql.conf lines...]: a fresh cluster, or the
# one already there (started if it is down). Prints nothing; sets PGDIR.
cluster_start() {
    local name=$1 port=$2; shift 2
    PGDIR="$(cluster_root)/$name"
    if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
        rm -rf "$PGDIR"
        mkdir -p "$PGDIR/data" "$PGDIR/sock"
        chown -R postgres:postgres "$PGDIR"
        sudo -u postgres "$PG_BIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C >"$PGDIR/initdb.log" 2>&1
        {
            echo "port = $port"
            echo "listen_addresses = '127.0.0.1'"
            echo "unix_socket_directories = '$PGDIR/sock'"
            echo "logging_collector = off"
            echo "fsync = off"
            for line in "$@"; do echo "$line"; done
        } >>"$PGDIR/data/postgresql.conf"
    fi
    if ! sudo -u postgres "$PG_BIN/pg_ctl" -D "$PGDIR/data" status >/dev/null 2>&1; then
        sudo -u postgres "$PG_BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 60 start >/dev/null
    fi
    export PGHOST="$PGDIR/sock" PGPORT="$port" PGUSER=postgres
}

cluster_stop() {
    local dir
    dir="$(cluster_root)/$1"
    if [ -f "$dir/data/PG_VERSION" ]; then
        sudo -u postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

# psql against the cluster started last: psql_at DB [psql args...]
psql_at() {
    local db=$1; shift
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"
}

# Builds the release library and installs it into the PostgreSQL of PG_CONFIG.
install_extension() {
    say "building and installing castle_sessions (release)"
    mkdir -p "$REPO/target"
    (cd "$REPO" && cargo pgrx install --release --pg-config "$PG_CONFIG" >"$REPO/target/install.log" 2>&1) || {
        tail -40 "$REPO/target/install.log"; exit 1; }
    # pgrx installs the current version and the upgrade scripts; the scripts of
    # earlier releases (kept for upgrade tests) go beside them.
    cp "$REPO"/sql/castle_sessions--[0-9]*.[0-9]*.[0-9]*.sql "$("$PG_CONFIG" --sharedir)/extension/" 2>/dev/null || true
}
