#!/usr/bin/env bash
# Stops every cluster these scripts started, for every target (their data
# stays in .cluster/TARGET/). The Debian 13 root's are stopped with the
# postgres user's signal, as pg_ctl would: its binaries are inside the root.
source "$(dirname "$0")/common.sh"
for target_dir in "$REPO"/.cluster/*/ /tmp/castle_sessions-clusters/*/; do
    [ -d "$target_dir" ] || continue
    for dir in "$target_dir"*/; do
        [ -f "$dir/data/postmaster.pid" ] || continue
        pid=$(head -1 "$dir/data/postmaster.pid")
        kill -INT "$pid" 2>/dev/null && echo "stopped $(basename "$target_dir")/$(basename "$dir")"
    done
done
exit 0
