# Shared by every script: paths, and the throwaway clusters this repo starts.
# Source it; do not run it.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The server a script works against, CASTLE_TARGET:
#   debian15   Debian 12's PostgreSQL 15 (the default), copied into .cache
#              (scripts/private_debian_pg.sh)
#   cassert15  an assert-enabled 15 built by scripts/build_pg.sh
#   debian17   Debian 13's PostgreSQL 17, inside the Debian 13 root of
#              scripts/trixie.sh (a script run there sees it at the same path)
#   cassert18  an assert-enabled 18 built by scripts/build_pg.sh
#   plain18    the same 18 without assertions, for the benchmark
# Each has its own pgrx home, cargo target folder, clusters and venv, so no
# build or cluster of one invalidates another's.
CASTLE_TARGET=${CASTLE_TARGET:-debian15}
# pg_bin_of TARGET: the bindir of that target's server
pg_bin_of() {
    case "$1" in
        # a copy of Debian's own in the repo (scripts/private_debian_pg.sh):
        # nothing here writes into the machine's /usr/lib/postgresql
        debian15) echo "$REPO/.cache/pg15-debian/stage/usr/lib/postgresql/15/bin" ;;
        # the Debian 13 root is the repo's own
        debian17) echo "/usr/lib/postgresql/17/bin" ;;
        cassert15|cassert18|plain18)
            local major=${1: -2} kind=${1%??}
            echo "$REPO/.cache/pg$major-$kind/stage/usr/lib/postgresql/$major/bin" ;;
        *) echo "CASTLE_TARGET=$1: one of debian15 cassert15 debian17 cassert18 plain18" >&2; return 2 ;;
    esac
}
PG_BIN=$(pg_bin_of "$CASTLE_TARGET")
PG_MAJOR=${CASTLE_TARGET: -2}
# always the versioned pg_config: /usr/bin/pg_config answers for one major only.
# pgrx's bindings are made from the pg_config this names, and remade when it
# changes, so a target never builds against another's headers.
PG_CONFIG=$PG_BIN/pg_config
export PGRX_PG_CONFIG_PATH=$PG_CONFIG
VENV=$REPO/.venv
if [ "$CASTLE_TARGET" != debian15 ]; then
    export PGRX_HOME=$REPO/.cache/pgrx-$CASTLE_TARGET
fi
# The host's targets share target/ (what does not depend on the server is
# built once; pgrx rebuilds its bindings when the pg_config changes). The
# Debian 13 root has a libc and a libclang of its own, so a target folder and
# a venv of its own.
if [ "$CASTLE_TARGET" = debian17 ]; then
    export CARGO_TARGET_DIR=$REPO/target/debian17
    VENV=$REPO/.venv-trixie
fi
export CASTLE_TARGET
# the version being built and packaged: Cargo.toml's
CASTLE_VERSION=$(grep -m1 '^version' "$REPO/Cargo.toml" | cut -d'"' -f2)
export PATH="$HOME/.cargo/bin:$PATH"

# Clusters live in the repo (.cluster/NAME), owned by the postgres OS user
# because initdb refuses root. If postgres cannot reach the checkout (a home
# folder that is 0700), or the socket path would be too long, they live under
# /tmp instead.
cluster_root() {
    local root="$REPO/.cluster/$CASTLE_TARGET"
    mkdir -p "$root"
    chmod 755 "$REPO/.cluster" "$root"
    if [ ${#root} -gt 70 ] || ! sudo -u postgres test -x "$root"; then
        root=/tmp/castle_sessions-clusters/$CASTLE_TARGET
        mkdir -p "$root" && chmod 755 "$(dirname "$root")" "$root"
    fi
    echo "$root"
}

# The commit a benchmark measures, "-dirty" when a tracked file but the reports in
# bench/results differs from it: a report that an earlier run wrote changes nothing measured.
measured_commit() {
    local commit
    commit=$(git -C "$REPO" describe --always)
    git -C "$REPO" diff --quiet HEAD -- . ':(exclude)bench/results' || commit+=-dirty
    echo "$commit"
}

say() { printf '\033[1m== %s %s\033[0m\n' "$(date +%T)" "$*"; }

# Every port the scripts and tests listen on is 254NN, below Linux's ephemeral
# range (32768-60999): a port in that range can be held by a client
# connection's TIME_WAIT, and a server then cannot bind it (pgbouncer once
# failed so, mid-suite).
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

# place_package OUT PG_CONFIG: the library and SQL files of a `cargo pgrx
# package` output folder moved into the PostgreSQL of PG_CONFIG, each by
# rename(2) within its directory. Overwriting castle_sessions.so in place (as
# `cargo pgrx install` does) crashes every server that has it mapped; a
# rename leaves them the file they mapped, and no moment exists at which the
# library is missing or half-written.
place_package() {
    local out=$1 pg_config=$2 libdir extdir so file
    libdir=$("$pg_config" --pkglibdir)
    extdir=$("$pg_config" --sharedir)/extension
    mkdir -p "$libdir" "$extdir"
    so=$(find "$out" -name castle_sessions.so)
    [ -n "$so" ] && [ "$(echo "$so" | wc -l)" = 1 ] ||
        { echo "no single castle_sessions.so in $out" >&2; return 1; }
    place_by_rename "$so" "$libdir"
    while IFS= read -r file; do
        place_by_rename "$file" "$extdir"
    done < <(find "$out" -path '*/extension/*' \( -name 'castle_sessions.control' -o -name 'castle_sessions--*.sql' \))
    # the scripts of earlier releases, kept for upgrades
    for file in "$REPO"/sql/castle_sessions--[0-9]*.[0-9]*.[0-9]*.sql; do
        place_by_rename "$file" "$extdir"
    done
    # the router extension (SQL only, on PL/Proxy: docs/sharding.md)
    router_files "$out/router"
    for file in "$out"/router/*; do
        place_by_rename "$file" "$extdir"
    done
}
# router_files DIR: castle_sessions_router's control file and script for this
# version, written into DIR
router_files() {
    mkdir -p "$1"
    sed "s/@CARGO_VERSION@/$CASTLE_VERSION/" "$REPO/router/castle_sessions_router.control" \
        >"$1/castle_sessions_router.control"
    # what both extensions define alike is written once, in sql/: each
    # "-- @SHARED sql/FILE@" line becomes FILE's part between "-- BEGIN shared
    # with castle_sessions_router" and "-- END shared with castle_sessions_router"
    local file
    for file in bootstrap finalize; do
        grep -q "^-- @SHARED sql/$file.sql@" "$REPO/router/castle_sessions_router.sql" &&
            grep -q '^-- END shared with castle_sessions_router' "$REPO/sql/$file.sql" ||
            { echo "router_files: no shared part of sql/$file.sql for the router's script" >&2; return 1; }
    done
    awk -v sql="$REPO/sql" '
        /^-- @SHARED sql\/[a-z_]+\.sql@/ {
            match($0, /sql\/[a-z_]+\.sql/)
            file = sql "/" substr($0, RSTART + 4, RLENGTH - 4)
            on = 0
            while ((getline line < file) > 0) {
                if (line ~ /^-- END shared with castle_sessions_router/) on = 0
                if (on) print line
                if (line ~ /^-- BEGIN shared with castle_sessions_router/) on = 1
            }
            close(file)
            next
        }
        { print }' "$REPO/router/castle_sessions_router.sql" >"$1/castle_sessions_router--$CASTLE_VERSION.sql"
}
# managed_edition OUT: the SQL edition (docs/managed.md) built from
# managed/castle_sessions.in.sql into OUT. What it shares with the extension is
# written once: each "-- @SHARED sql/FILE@" line becomes FILE's part between
# "-- BEGIN shared with the SQL edition" and "-- END shared with the SQL
# edition", and each "-- @QUERY src/queries/FILE@" line that query, as the
# extension prepares it. managed/castle_sessions.sql is this output, kept in
# the repo for those who install from one file; the suite fails if it differs.
managed_edition() {
    awk -v repo="$REPO" -v version="$CASTLE_VERSION" '
        function put(file, region,    line, on, found) {
            if ((getline line < file) <= 0) { print "managed_edition: cannot read " file > "/dev/stderr"; exit 1 }
            on = !region
            do {
                if (region && line ~ /^-- END shared with the SQL edition/) on = 0
                if (on) print line
                if (region && line ~ /^-- BEGIN shared with the SQL edition/) { on = 1; found = 1 }
            } while ((getline line < file) > 0)
            close(file)
            if (region && !found) { print "managed_edition: no shared part in " file > "/dev/stderr"; exit 1 }
        }
        /^ *-- @SHARED sql\/[a-z_]+\.sql@/ { match($0, /sql\/[a-z_]+\.sql/); put(repo "/" substr($0, RSTART, RLENGTH), 1); next }
        /^ *-- @QUERY src\/queries\/[a-z_]+\.sql@/ { match($0, /src\/queries\/[a-z_]+\.sql/); put(repo "/" substr($0, RSTART, RLENGTH), 0); next }
        { gsub(/@VERSION@/, version); print }' "$REPO/managed/castle_sessions.in.sql" >"$1"
}
# place_by_rename FILE DIR: FILE becomes DIR/its name
place_by_rename() {
    local name
    name=$(basename "$1")
    cp "$1" "$2/.$name.castle-new"
    chmod 0644 "$2/.$name.castle-new"
    mv -f "$2/.$name.castle-new" "$2/$name"
}

# Builds the release library and installs it into the PostgreSQL of
# PG_CONFIG, by rename (scripts/install.sh): a cluster running from that
# installation, the tour's say, survives it.
install_extension() {
    say "building and installing castle_sessions (release)"
    "$REPO/scripts/install.sh" >/dev/null
}

# The machine's own Debian mirror, from its apt configuration (never a host named here).
debian_mirror() {
    local mirror
    mirror=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' |
        grep -v security | head -1)
    [ -n "$mirror" ] || mirror=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -1)
    [ -n "$mirror" ] || { echo "no Debian mirror in the machine's apt configuration" >&2; return 1; }
    echo "$mirror"
}
