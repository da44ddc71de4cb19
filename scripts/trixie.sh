#!/usr/bin/env bash
# scripts/trixie.sh COMMAND...: runs COMMAND (from the repo) inside the Debian
# 13 root where PostgreSQL 17 is built and tested, as CASTLE_TARGET=debian17.
# The root is kept in .cache/roots/trixie-dev; the repo, ~/.cargo and
# ~/.rustup are mounted at their own paths inside, so the host's rustc and
# cargo-pgrx build there against Debian 13's PostgreSQL 17 and libc. Its
# packages come from setup.sh, run inside. One at a time (a lock), in a mount
# namespace of its own (the mounts end with it).
source "$(dirname "$0")/common.sh"
source "$REPO/scripts/roots.sh"
in_private_mounts "$0" "$@"

DEV=$ROOTS/trixie-dev
mkdir -p "$ROOTS"
exec 9>"$ROOTS/trixie-dev.lock"
flock 9
[ -f "$DEV.complete" ] || fresh_root trixie "$DEV"
trap 'root_umount "$DEV"' EXIT
root_mount "$DEV" "$REPO" "$HOME/.cargo" "$HOME/.rustup"
CASTLE_TARGET=debian17 root_run "$DEV" "cd '$REPO' && ./scripts/setup.sh >&2 && $*"
