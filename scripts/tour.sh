#!/usr/bin/env bash
# The main job: set up, build, start a throwaway cluster of our own, install the
# extension and walk the tour. Leaves the cluster running.
source "$(dirname "$0")/common.sh"

"$REPO/scripts/setup.sh"
mkdir -p "$REPO/target"
install_extension
say "starting the tour cluster (port 25415), a fresh one"
# throwaway: a cluster left by an earlier tour has an older library loaded
cluster_stop tour
rm -rf "$(cluster_root)/tour"
cluster_start tour 25415 "shared_preload_libraries = 'castle_sessions'"
psql_at postgres -c "DROP DATABASE IF EXISTS tour" -c "CREATE DATABASE tour" 2>/dev/null
psql_at tour -c "CREATE EXTENSION castle_sessions"
say "the tour"
psql_at tour -f "$REPO/scripts/tour.sql"
cat <<MSG

The cluster is still running. Connect with:
    $PG_BIN/psql -h $PGHOST -p $PGPORT -U postgres tour
or from an application: postgresql://postgres@127.0.0.1:$PGPORT/tour
Stop it with:
    scripts/stop.sh
MSG
