#!/usr/bin/env bash
# What one PL/Proxy hop costs, and what four shards give on this machine
# (docs/sharding.md): bash bench/shards.sh
#
# One throwaway cluster of its own (port 25480) holds four shard databases,
# a router database with castle_sessions_router over them (a TCP hop each,
# as to a shard on another machine), and a database that is no shard. In
# interleaved rounds of pgbench (over TCP, as from an application server),
# it measures:
#   - authenticate of partition 0's users on shard 0 directly and through
#     the router, one request at a time (what one hop costs; target: the
#     router at least 0.5x the direct call) and with 2 clients (where the
#     router, the shard and pgbench share this machine's cores);
#   - create_session of partition 0's users, directly and through the router;
#   - authenticate of every user's token through the router (four shards)
#     against the same on the database that is no shard (one server).
# Writes bench/results/shards-pgNN.md. Exits 0 when a target fails: it is a
# report, and FAIL lines say so.
#
#   BENCH_ROUNDS   interleaved rounds                (default 5)
#   BENCH_SECONDS  seconds per workload per round    (default 10)
#   BENCH_TOKENS   sessions signed in                (default 40000)
#   PG             15 (Debian 12's, the default) or 17 (Debian 13's, in scripts/trixie.sh's root)
source "$(dirname "$0")/target.sh"
source "$(dirname "$0")/../scripts/common.sh"
COMMIT=${CASTLE_COMMIT:-$(measured_commit)}
ROUNDS=${BENCH_ROUNDS:-5}
T=${BENCH_SECONDS:-10}
NTOKENS=${BENCH_TOKENS:-40000}
PORT=25480
BENCH="$REPO/bench"
REPORT="$BENCH/results/shards-pg$PG_MAJOR.md"
WORK=$(mktemp -d)

"$REPO/scripts/setup.sh"
install_extension
[ -f "$("$PG_CONFIG" --pkglibdir)/plproxy.so" ] || { echo "no PL/Proxy in this PostgreSQL" >&2; exit 1; }
trap 'cluster_stop benchshards; rm -rf "$WORK"' EXIT
cluster_stop benchshards
rm -rf "$(cluster_root)/benchshards"
cluster_start benchshards $PORT "shared_preload_libraries = 'castle_sessions'" "shared_buffers = 512MB" \
    "synchronous_commit = off" "max_connections = 60" "castle.max_sessions = 0"

say "four shards, a router and one server, with $NTOKENS sessions each"
for p in 0 1 2 3; do
    psql_at postgres -c "CREATE DATABASE shard_$p"
    psql_at "shard_$p" -c "CREATE EXTENSION castle_sessions" -c "SELECT castle.configure_shard($p, 4)"
done
psql_at postgres -c "CREATE DATABASE single" -c "CREATE DATABASE router"
psql_at single -c "CREATE EXTENSION castle_sessions"
psql_at router <<SQL
CREATE EXTENSION castle_sessions_router CASCADE;
CREATE SERVER castle_shards FOREIGN DATA WRAPPER plproxy OPTIONS (connection_lifetime '1800',
    p0 'host=127.0.0.1 port=$PORT dbname=shard_0', p1 'host=127.0.0.1 port=$PORT dbname=shard_1',
    p2 'host=127.0.0.1 port=$PORT dbname=shard_2', p3 'host=127.0.0.1 port=$PORT dbname=shard_3');
CREATE USER MAPPING FOR postgres SERVER castle_shards OPTIONS (user 'postgres');
-- PL/Proxy's own cost: a call that does nothing on the shard
CREATE FUNCTION bench_empty_hop(x int) RETURNS int LANGUAGE plproxy AS \$\$
    CLUSTER 'castle_shards'; RUN ON 0; SELECT x;
\$\$;
-- every user's token (all), and partition 0's users and tokens (p0)
CREATE TABLE all_tokens (n serial PRIMARY KEY, token text NOT NULL);
INSERT INTO all_tokens (token) SELECT castle.create_session(u::bigint) FROM generate_series(1, $NTOKENS) AS u;
CREATE TABLE bench_tokens (n serial PRIMARY KEY, token text NOT NULL);
INSERT INTO bench_tokens (token) SELECT token FROM all_tokens WHERE castle.token_session_id(token) & 3 = 0 ORDER BY n;
CREATE TABLE bench_users (n serial PRIMARY KEY, user_id bigint NOT NULL);
INSERT INTO bench_users (user_id) SELECT u FROM generate_series(1000001, 1000000 + 4 * $NTOKENS) AS u
 WHERE castle.user_hash(u::bigint) & 3 = 0;
SQL
psql_at router -c "COPY bench_tokens TO STDOUT" | psql_at shard_0 -c "CREATE TABLE bench_tokens (n int PRIMARY KEY, token text NOT NULL)" -c "COPY bench_tokens FROM STDIN"
psql_at router -c "COPY bench_users TO STDOUT" | psql_at shard_0 -c "CREATE TABLE bench_users (n int PRIMARY KEY, user_id bigint NOT NULL)" -c "COPY bench_users FROM STDIN"
psql_at single -c "CREATE TABLE bench_tokens (n serial PRIMARY KEY, token text NOT NULL)" \
    -c "INSERT INTO bench_tokens (token) SELECT castle.create_session(u::bigint) FROM generate_series(1, $NTOKENS) AS u"
psql_at router -c "ALTER TABLE all_tokens RENAME TO all_router_tokens" \
    -c "ALTER TABLE bench_tokens RENAME TO p0_tokens" -c "CREATE VIEW bench_tokens AS SELECT * FROM p0_tokens"
P0_TOKENS=$(psql_at router -Atc "SELECT count(*) FROM p0_tokens")
P0_USERS=$(psql_at router -Atc "SELECT count(*) FROM bench_users")
for db in shard_0 shard_1 shard_2 shard_3 single router; do psql_at "$db" -c "VACUUM ANALYZE" >/dev/null; done

declare -A TPS
run() {   # run LABEL DB WORKLOAD NTOKENS [CLIENTS]
    local clients=${5:-2}
    "$PG_BIN/pgbench" -h 127.0.0.1 -n -M prepared -c "$clients" -j "$clients" -T "$T" -D ntokens="$4" -D nusers="$P0_USERS" \
        -f "$BENCH/workloads/$3.sql" "$2" >"$WORK/pgbench.out" 2>&1 || { cat "$WORK/pgbench.out" >&2; exit 1; }
    local tps
    tps=$(awk '/^tps = /{ printf "%.0f", $3 }' "$WORK/pgbench.out")
    TPS[$1]="${TPS[$1]:-}$tps "
    printf '  %-34s %8s tps\n' "$1" "$tps" >&2
}
median() { tr ' ' '\n' <<<"${TPS[$1]}" | grep . | sort -n | awk '{ v[NR] = $1 } END {
    print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ratio() {   # the median over rounds of A's tps over B's in the same round
    paste -d' ' <(tr ' ' '\n' <<<"${TPS[$1]}" | grep .) <(tr ' ' '\n' <<<"${TPS[$2]}" | grep .) |
        awk '{ print $1 / $2 }' | sort -g | awk '{ v[NR] = $1 } END {
            printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for round in $(seq "$ROUNDS"); do
    say "round $round of $ROUNDS"
    run "authenticate on shard 0, 1 client" shard_0 shard_authenticate "$P0_TOKENS" 1
    run "authenticate via router, 1 client" router shard_authenticate "$P0_TOKENS" 1
    run "authenticate on shard 0" shard_0 shard_authenticate "$P0_TOKENS"
    run "authenticate through the router" router shard_authenticate "$P0_TOKENS"
    run "an empty PL/Proxy call" router shard_empty_hop "$P0_TOKENS"
    run "create_session on shard 0" shard_0 shard_create_session "$P0_TOKENS"
    run "create_session through the router" router shard_create_session "$P0_TOKENS"
    psql_at router -c "DROP VIEW bench_tokens" -c "CREATE VIEW bench_tokens AS SELECT * FROM all_router_tokens"
    run "authenticate, 4 shards via router" router shard_authenticate "$NTOKENS"
    psql_at router -c "DROP VIEW bench_tokens" -c "CREATE VIEW bench_tokens AS SELECT * FROM p0_tokens"
    run "authenticate, one server" single shard_authenticate "$NTOKENS"
done

hop=$(ratio "authenticate via router, 1 client" "authenticate on shard 0, 1 client")
verdict=$(awk -v r="$hop" 'BEGIN { print (r >= 0.5) ? "PASS" : "FAIL" }')
{
    echo "# Shards through PL/Proxy, PostgreSQL $PG_MAJOR"
    echo
    echo "\`bash bench/shards.sh\` at $COMMIT, $(date -u +%Y-%m-%d), $(nproc) cores; pgbench -M prepared over TCP, 2 clients (1 where a row says so),"
    echo "$ROUNDS interleaved rounds of $T s; ratios are medians of each round's ratio. Four shard databases,"
    echo "the router and the one-server database share one cluster on this machine; the router reaches"
    echo "each shard over TCP, as it would on another machine. \`castle.max_sessions = 0\`."
    echo
    echo "| workload | median tps |"
    echo "|---|---|"
    for label in "authenticate on shard 0, 1 client" "authenticate via router, 1 client" \
                 "authenticate on shard 0" "authenticate through the router" "an empty PL/Proxy call" \
                 "create_session on shard 0" \
                 "create_session through the router" "authenticate, 4 shards via router" "authenticate, one server"; do
        echo "| $label | $(median "$label") |"
    done
    echo
    echo "| ratio | value | target |"
    echo "|---|---|---|"
    echo "| authenticate, one request at a time: router / direct (what one hop costs) | $hop | ≥ 0.5: $verdict |"
    echo "| authenticate, 2 clients: router / direct (router, shard and clients on the same 2 cores) | $(ratio "authenticate through the router" "authenticate on shard 0") | — |"
    echo "| an empty PL/Proxy call / authenticate on shard 0, 2 clients (the most any router on PL/Proxy can reach here) | $(ratio "an empty PL/Proxy call" "authenticate on shard 0") | — |"
    echo "| authenticate through the router / an empty PL/Proxy call, 2 clients (what castle_sessions_router adds) | $(ratio "authenticate through the router" "an empty PL/Proxy call") | — |"
    echo "| create_session: router / direct | $(ratio "create_session through the router" "create_session on shard 0") | — |"
    echo "| authenticate: 4 shards via router / one server, same machine | $(ratio "authenticate, 4 shards via router" "authenticate, one server") | — |"
} | tee "$REPORT"
