#!/usr/bin/env bash
# scripts/install.sh [PG_CONFIG]: builds castle_sessions (release) for the
# PostgreSQL of PG_CONFIG and installs it there, safely under a running server.
#
# `cargo pgrx install` overwrites castle_sessions.so in place (the same
# inode): every server that has the library mapped then runs changed code and
# crashes, and its postmaster may not come back. This script builds with
# `cargo pgrx package` and moves each file into place by rename: a running
# server keeps the file it mapped, new backends load the new one, and no
# moment exists at which the library is missing or half-written. Running
# backends (and a preloaded library, until the server restarts) keep the old
# code; restart the server to run the new one everywhere.
#
# Without an argument: the pg_config of CASTLE_TARGET (see common.sh).
source "$(dirname "$0")/common.sh"

pg_config=${1:-$PG_CONFIG}
out=${CARGO_TARGET_DIR:-$REPO/target}/install-$CASTLE_TARGET
log=${CARGO_TARGET_DIR:-$REPO/target}/install-$CASTLE_TARGET.log
rm -rf "$out"
mkdir -p "$(dirname "$log")"
(cd "$REPO" && cargo pgrx package --pg-config "$pg_config" --out-dir "$out" >"$log" 2>&1) ||
    { tail -40 "$log" >&2; exit 1; }

libdir=$("$pg_config" --pkglibdir)
extdir=$("$pg_config" --sharedir)/extension
# place_by_rename FILE DIR: FILE becomes DIR/its name, by rename(2) within DIR
place_by_rename() {
    local file=$1 dir=$2 name
    name=$(basename "$file")
    cp "$file" "$dir/.$name.castle-new"
    chmod 0644 "$dir/.$name.castle-new"
    mv -f "$dir/.$name.castle-new" "$dir/$name"
}
mkdir -p "$libdir" "$extdir"
so=$(find "$out" -name castle_sessions.so)
[ "$(echo "$so" | wc -l)" = 1 ] && [ -n "$so" ] ||
    { echo "cargo pgrx package left no single castle_sessions.so in $out" >&2; exit 1; }
place_by_rename "$so" "$libdir"
while IFS= read -r file; do
    place_by_rename "$file" "$extdir"
done < <(find "$out" -path '*/extension/*' \( -name 'castle_sessions.control' -o -name 'castle_sessions--*.sql' \))
# the scripts of earlier releases, kept for upgrades
for file in "$REPO"/sql/castle_sessions--[0-9]*.[0-9]*.[0-9]*.sql; do
    place_by_rename "$file" "$extdir"
done
echo "installed castle_sessions $CASTLE_VERSION into $libdir and $extdir"
