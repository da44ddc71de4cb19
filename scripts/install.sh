#!/usr/bin/env bash
# scripts/install.sh [PG_CONFIG]: builds castle_sessions (release) for the
# PostgreSQL of PG_CONFIG and installs it there, safely under a running server.
#
# `cargo pgrx install` overwrites castle_sessions.so in place (the same
# inode): every server that has the library mapped then runs changed code and
# crashes, and its postmaster may not come back. This builds with `cargo pgrx
# package` and moves each file into place by rename (place_package in
# common.sh): a running server keeps the file it mapped and new backends load
# the new one. Backends already running (and a preloaded library, until the
# server restarts) keep the old code; restart the server to run the new one
# everywhere.
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
place_package "$out" "$pg_config"
echo "installed castle_sessions $CASTLE_VERSION into $("$pg_config" --pkglibdir)"
