#!/usr/bin/env bash
# The SQL edition (managed/castle_sessions.sql) against the extension, the
# primary-key floor and the PL/pgSQL rival (bench/plpgsql.sql), in one run:
#   bash bench/managed.sh
# One throwaway cluster of Debian's 15 with the library (port 25435), two
# databases: bench_ext (CREATE EXTENSION castle_sessions) and bench_sql (the
# SQL edition, installed by a database owner who is not a superuser). Both
# get the rival and the same token table; pgbench connects as an application
# role made by castle.grant_sign_in_role, as an application would (the
# edition reads session settings only for its owner and superusers), with
# touch off in both (castle.touch_interval = -1), as bench/run.sh measures.
# Interleaved rounds; each ratio is the median of the per-round ratios.
# Writes the report to stdout and bench/results/managed-pg15.md.
#
#   BENCH_ROUNDS   interleaved rounds                 (default 3)
#   BENCH_SECONDS  seconds per workload per round     (default 10)
#   BENCH_TOKENS   sessions the workloads draw from   (default 100000)
source "$(dirname "$0")/../scripts/common.sh"
COMMIT=$(measured_commit)
ROUNDS=${BENCH_ROUNDS:-3}
T=${BENCH_SECONDS:-10}
NTOKENS=${BENCH_TOKENS:-100000}
USERS=1000000
PORT=25435
BENCH="$REPO/bench"
REPORT="$BENCH/results/managed-pg15.md"
WORK=$(mktemp -d)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

"$REPO/scripts/setup.sh"
install_extension
trap 'cluster_stop managed-bench; rm -rf "$WORK"' EXIT
cluster_stop managed-bench
rm -rf "$(cluster_root)/managed-bench"
cluster_start managed-bench $PORT "shared_buffers = 1GB" "synchronous_commit = off" \
    "max_wal_size = 16GB" "checkpoint_timeout = 1h" "shared_preload_libraries = 'castle_sessions'"

psql_at postgres -c "CREATE ROLE bench_owner LOGIN CREATEROLE" -c "CREATE ROLE bench_app LOGIN"
# db_setup DB EDITION: the edition, the rival, the tokens; the application role
db_setup() {
    psql_at postgres -c "CREATE DATABASE $1 OWNER bench_owner"
    if [ "$2" = extension ]; then
        psql_at "$1" -c "CREATE EXTENSION castle_sessions" -c "ALTER DATABASE $1 SET castle.touch_interval = -1"
        psql_at "$1" -c "SELECT castle.grant_sign_in_role('bench_app')"
    else
        psql_at "$1" -U bench_owner -1 -f "$REPO/managed/castle_sessions.sql"
        psql_at "$1" -U bench_owner -c "UPDATE castle.settings SET touch_interval = -1" \
            -c "SELECT castle.grant_sign_in_role('bench_app')"
    fi
    psql_at "$1" -c "CREATE EXTENSION pg_prewarm" -f "$BENCH/plpgsql.sql" -f "$BENCH/setup.sql"
    psql_at "$1" -c "CALL bench.load_tokens($NTOKENS)"
    # the floor reads and inserts the table itself; the rival's functions run as their owner
    psql_at "$1" -c "GRANT USAGE ON SCHEMA bench, bench_plpgsql TO bench_app" \
        -c "GRANT SELECT ON bench.tokens TO bench_app" \
        -c "GRANT SELECT, INSERT ON castle.sessions TO bench_app" \
        -c "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA bench_plpgsql TO bench_app" \
        -c "ALTER ROLE bench_app IN DATABASE $1 SET castle.touch_interval = -1"
    psql_at "$1" -c "VACUUM (FREEZE, ANALYZE)" -c "SELECT pg_prewarm(c) FROM unnest(ARRAY[
        'castle.sessions', 'castle.sessions_pkey', 'bench.tokens', 'bench.tokens_pkey']::regclass[]) AS c" >/dev/null
}
say "loading $NTOKENS sessions into each database through its own create_session"
db_setup bench_ext extension
db_setup bench_sql sql
psql_at bench_sql -c "SELECT count(*) AS tokens_that_verify FROM bench.tokens WHERE castle.is_valid(token)"

run() {   # run DB WORKLOAD: one pgbench run of T seconds as bench_app; prints its tps
    "$PG_BIN/pgbench" -n -M prepared -c 2 -j 2 -T "$T" -U bench_app -D ntokens="$NTOKENS" -D users=$USERS \
        -f "$BENCH/workloads/$2.sql" "$1" >"$WORK/pgbench.out" 2>&1 || { cat "$WORK/pgbench.out" >&2; exit 1; }
    awk '/^tps = /{ printf "%.0f", $3 }' "$WORK/pgbench.out"
}
declare -A TPS
measure() {   # measure LABEL DB WORKLOAD
    local tps
    tps=$(run "$2" "$3") || exit 1
    TPS[$1]="${TPS[$1]:-}$tps "
    printf '  %-30s %8s tps\n' "$1" "$tps" >&2
}
ratio() {
    paste -d' ' <(tr ' ' '\n' <<<"${TPS[$1]}" | grep .) <(tr ' ' '\n' <<<"${TPS[$2]}" | grep .) |
        awk '{ print $1 / $2 }' | sort -g | awk '{ v[NR] = $1 } END {
            printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
median() { tr ' ' '\n' <<<"${TPS[$1]}" | grep . | sort -n | awk '{ v[NR] = $1 } END {
    print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
INSERT_HASH=$(sed -n "s/.*VALUES ('\([0-9a-f]\{64\}\)'.*/\1/p" "$BENCH/workloads/insert.sql")
tidy() { psql_at "$1" -c "DELETE FROM castle.sessions WHERE hash = '$INSERT_HASH'" -c "VACUUM ANALYZE castle.sessions" >/dev/null; }

for round in $(seq "$ROUNDS"); do
    say "round $round of $ROUNDS"
    measure "floor" bench_sql floor
    measure "sql authenticate" bench_sql authenticate
    measure "extension authenticate" bench_ext authenticate
    measure "rival authenticate" bench_sql plpgsql_authenticate
    measure "sql forged" bench_sql forged
    measure "extension forged" bench_ext forged
    measure "insert" bench_sql insert
    tidy bench_sql
    measure "sql create_session" bench_sql create_session
    measure "extension create_session" bench_ext create_session
    measure "rival create_session" bench_sql plpgsql_create_session
done

{
    echo "# castle_sessions: the SQL edition against the extension"
    echo
    echo "\`bash bench/managed.sh\` at \`$COMMIT\`, $(date -u +%F), Debian's PostgreSQL 15, $ROUNDS interleaved"
    echo "rounds of $T s, pgbench -M prepared -c 2 as an application role (grant_sign_in_role), touch off,"
    echo "$NTOKENS sessions; load average at start: $LOAD_AT_START. Ratios are medians of per-round ratios."
    echo
    echo "| workload | tps (median) | rounds |"
    echo "|---|---|---|"
    for label in floor "sql authenticate" "extension authenticate" "rival authenticate" "sql forged" \
                 "extension forged" insert "sql create_session" "extension create_session" "rival create_session"; do
        echo "| $label | $(median "$label") | $(tr -s ' ' <<<"${TPS[$label]}" | sed 's/ $//; s/ /, /g') |"
    done
    echo
    echo "| ratio | value | target |"
    echo "|---|---|---|"
    echo "| SQL edition authenticate / primary-key floor | $(ratio "sql authenticate" floor)× | (extension: $(ratio "extension authenticate" floor)×) |"
    echo "| SQL edition authenticate / extension authenticate | $(ratio "sql authenticate" "extension authenticate")× | |"
    echo "| SQL edition authenticate / PL/pgSQL rival | $(ratio "sql authenticate" "rival authenticate")× | ≥ 1.0× |"
    echo "| SQL edition forged token / primary-key floor | $(ratio "sql forged" floor)× | (extension: $(ratio "extension forged" floor)×) |"
    echo "| SQL edition create_session / bare INSERT | $(ratio "sql create_session" insert)× | (extension: $(ratio "extension create_session" insert)×) |"
    echo "| SQL edition create_session / extension create_session | $(ratio "sql create_session" "extension create_session")× | |"
    echo "| SQL edition create_session / PL/pgSQL rival | $(ratio "sql create_session" "rival create_session")× | ≥ 1.0× |"
} | tee "$REPORT"
