#!/usr/bin/env bash
# Stops every cluster these scripts started (their data stays in .cluster/).
source "$(dirname "$0")/common.sh"
root=$(cluster_root)
for dir in "$root"/*/; do
    [ -f "$dir/data/PG_VERSION" ] && cluster_stop "$(basename "$dir")" && echo "stopped $(basename "$dir")"
done
exit 0
