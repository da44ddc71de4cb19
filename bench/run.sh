#!/usr/bin/env bash
# The benchmark suite, in one command: bash bench/run.sh
#
# Starts a throwaway cluster of its own ("bench", port 25419), loads sessions,
# measures interleaved rounds of every workload with pgbench, checks the
# targets, profiles castle.authenticate, runs the mixed load (bench/mixed.sh),
# and writes the report to stdout and bench/results/pgNN.md. Exits 0 when a target fails: it is a report, and
# FAIL lines say so. Builds and installs castle_sessions (release) first.
#
#   BENCH_ROUNDS   interleaved rounds                         (default 5)
#   BENCH_SECONDS  seconds per workload per round             (default 10)
#   BENCH_BIG      sessions in the scale comparison's table   (default 10000000)
#   BENCH_TOKENS   sessions the workloads draw tokens from    (default 100000)
#   PG             the major to measure: 15 (Debian 12's, the default), 17
#                  (Debian 13's, inside scripts/trixie.sh's root) or 18 (18.6
#                  built by scripts/build_pg.sh without assertions)
source "$(dirname "$0")/target.sh"
source "$(dirname "$0")/../scripts/common.sh"
COMMIT=${CASTLE_COMMIT:-$(measured_commit)}

ROUNDS=${BENCH_ROUNDS:-5}
T=${BENCH_SECONDS:-10}
BIG=${BENCH_BIG:-10000000}
NTOKENS=${BENCH_TOKENS:-100000}
# create_session and INSERT draw their user from this many: a sign-in, as most are,
# by a user still under castle.max_sessions (one at the limit also deletes its oldest
# session, which the bare INSERT does not; BENCH_USERS=10000 measures that case)
USERS=${BENCH_USERS:-1000000}
PORT=25419
BENCH="$REPO/bench"
REPORT="$BENCH/results/pg$PG_MAJOR.md"
WORK=$(mktemp -d)
STARTED=$(date +%s)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)   # others' work on the machine skews every number

"$REPO/scripts/setup.sh"
install_extension
[ "$BIG" -ge "$NTOKENS" ] || { echo "BENCH_BIG must be at least BENCH_TOKENS" >&2; exit 1; }

# A fresh cluster every run, so no run inherits another's bloat or settings.
# 2 GB of shared buffers hold the whole 10M-row table and its indexes; no
# commit waits for its WAL flush, so create_session and INSERT measure work,
# not the disk (the cluster already runs with fsync off).
trap 'cluster_stop bench; rm -rf "$WORK"' EXIT
cluster_stop bench
rm -rf "$(cluster_root)/bench"
cluster_start bench $PORT "shared_buffers = 2GB" "synchronous_commit = off" \
    "max_wal_size = 16GB" "checkpoint_timeout = 1h" "max_connections = 20"

# db_setup DB: the extension, the PL/pgSQL rival, the token table. Touch is off
# (castle.touch_interval = -1) for every workload but the touch comparison:
# under a 60 s interval whether a call writes depends on how recently the
# same random token was drawn, which makes the rate depend on the run length.
db_setup() {
    psql_at postgres -c "CREATE DATABASE $1"
    psql_at "$1" -c "CREATE EXTENSION castle_sessions" -c "CREATE EXTENSION pg_prewarm" \
        -c "LOAD 'castle_sessions'" -c "ALTER DATABASE $1 SET castle.touch_interval = -1"
    psql_at "$1" -f "$BENCH/plpgsql.sql" -f "$BENCH/setup.sql"
}

# db_ready DB: tokens checked, then vacuumed, analyzed and read into memory.
db_ready() {
    psql_at "$1" -f "$BENCH/check.sql"
    psql_at "$1" -c "VACUUM (FREEZE, ANALYZE)" -c "SELECT pg_prewarm(c) FROM unnest(ARRAY[
        'castle.sessions', 'castle.sessions_pkey', 'bench.tokens', 'bench.tokens_pkey']::regclass[]) AS c" >/dev/null
}

say "loading $NTOKENS sessions through castle.create_session"
db_setup bench
psql_at bench -c "CALL bench.load_tokens($NTOKENS)"
db_ready bench

# run DB WORKLOAD [VAR=VALUE...]: one pgbench run of T seconds; prints its tps.
run() {
    local db=$1 workload=$2; shift 2
    env "$@" "$PG_BIN/pgbench" -n -M prepared -c 2 -j 2 -T "$T" -D ntokens="$NTOKENS" -D users=$USERS \
        -f "$BENCH/workloads/$workload.sql" "$db" >"$WORK/pgbench.out" 2>&1 || {
        cat "$WORK/pgbench.out" >&2; exit 1; }
    awk '/^tps = /{ printf "%.0f", $3 }' "$WORK/pgbench.out"
}

# Every measurement, by label: the tps of each round, space-separated.
declare -A TPS
measure() {   # measure LABEL DB WORKLOAD [VAR=VALUE...]
    local label=$1; shift
    local tps
    tps=$(run "$@") || exit 1
    TPS[$label]="${TPS[$label]:-}$tps "
    printf '  %-34s %8s tps\n' "$label" "$tps" >&2
}
median() { tr ' ' '\n' <<<"${TPS[$1]}" | grep . | sort -n | awk '{ v[NR] = $1 } END {
    print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
# ratio A B: the median over rounds of A's tps over B's in the same round. The
# workloads run interleaved, so each round's pair met the machine in the same
# minute; a VM's speed drifts from minute to minute, and a ratio of two medians
# can set one workload's fast round against the other's slow one.
ratio() {
    paste -d' ' <(tr ' ' '\n' <<<"${TPS[$1]}" | grep .) <(tr ' ' '\n' <<<"${TPS[$2]}" | grep .) |
        awk '{ print $1 / $2 }' | sort -g | awk '{ v[NR] = $1 } END {
            printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# the ratio of the two medians, shown beside it
ratio_of_medians() { awk -v a="$(median "$1")" -v b="$(median "$2")" 'BEGIN { printf "%.2f", a / b }'; }

# After each INSERT and create_session run their rows go, then VACUUM, so the
# table does not grow round after round, and every round's sign-ins are of
# users under castle.max_sessions (left in place, five rounds would bring a
# quarter of the users to their limit, where each sign-in also trims).
tidy() {
    psql_at "$1" -c "DELETE FROM castle.sessions WHERE hash = '$INSERT_HASH' OR user_id LIKE 'c%'" \
        -c "VACUUM ANALYZE castle.sessions" >/dev/null
}
INSERT_HASH=$(sed -n "s/.*VALUES ('\([0-9a-f]\{64\}\)'.*/\1/p" "$BENCH/workloads/insert.sql")
[ ${#INSERT_HASH} -eq 64 ] || { echo "bench/workloads/insert.sql: no hash found" >&2; exit 1; }

MAIN=(floor authenticate verify forged plpgsql_authenticate plpgsql_verify plpgsql_forged
      insert create_session plpgsql_create_session)
for round in $(seq "$ROUNDS"); do
    say "main workloads, round $round of $ROUNDS"
    for w in "${MAIN[@]}"; do
        measure "$w" bench "$w"
        if [ "$w" = insert ] || [ "$w" = create_session ]; then tidy bench; fi
    done
    measure "plpgsql_authenticate, no checksum" bench plpgsql_authenticate \
        PGOPTIONS="-c bench_plpgsql.skip_checksum=on"
done

for round in $(seq "$ROUNDS"); do
    say "touch on versus off, round $round of $ROUNDS"
    measure "touch off" bench authenticate
    measure "touch on" bench authenticate PGOPTIONS="-c castle.touch_interval=0"
done
tidy bench

say "profile of castle.authenticate"
PROFILE="perf was not available: no profile"
if ! command -v perf >/dev/null; then
    apt-get install -y -qq linux-perf >/dev/null 2>&1 || true
fi
# Software clock sampling: it also works in VMs that expose no hardware counters.
if command -v perf >/dev/null && perf record -q -e cpu-clock -o "$WORK/probe.data" -- true >/dev/null 2>&1; then
    perf record -q -e cpu-clock -F 1999 -a -o "$WORK/perf.data" -- \
        "$PG_BIN/pgbench" -n -M prepared -c 2 -j 2 -T "$T" -D ntokens="$NTOKENS" \
        -f "$BENCH/workloads/authenticate.sql" bench >"$WORK/profile-pgbench.out" 2>&1
    report() { perf report -i "$WORK/perf.data" --stdio --comm postgres --percentage relative "$@" 2>/dev/null \
                 | grep -v '^#' | grep .; }
    PROFILE=$(
        echo "CPU samples of the postgres processes during one $T s authenticate run"
        echo "(\`perf record -e cpu-clock -a\`; pgbench itself excluded), by library:"
        echo
        echo '```'
        # summed from the symbol view: perf's --sort dso leaves the kernel out
        report --sort dso,symbol | awk '{ share[$2] += $1 } END { for (d in share) printf "%7.2f%%  %s\n", share[d], d }' \
            | sort -rn | head -8
        echo '```'
        echo
        echo "Top functions:"
        echo
        echo '```'
        report --sort dso,symbol | head -25 | cut -c1-110 | sed 's/ *$//'
        echo '```'
        echo
        echo "Top functions inside castle_sessions.so (share of its own samples):"
        echo
        echo '```'
        report --sort dso,symbol --dsos castle_sessions.so | head -12 | cut -c1-110 | sed 's/[ -]*$//'
        echo '```'
    )
fi

say "instructions per transaction (callgrind)"
source "$BENCH/instructions.sh"
CALLGRIND=$(callgrind_section bench)
cluster_start bench $PORT

say "loading $BIG sessions for the scale comparison"
db_setup big
psql_at big -v big="$BIG" -v ntokens="$NTOKENS" -f "$BENCH/big.sql" >/dev/null
db_ready big
for round in $(seq "$ROUNDS"); do
    say "authenticate at $NTOKENS versus $BIG sessions, round $round of $ROUNDS"
    measure "authenticate, $NTOKENS sessions" bench authenticate
    measure "authenticate, $BIG sessions" big authenticate
    measure "floor, $BIG sessions" big floor
done

# the mixed load: a cluster of its own, the library preloaded, touch at its default
cluster_stop bench
PG=$PG_MAJOR CASTLE_COMMIT=$COMMIT bash "$BENCH/mixed.sh" >"$WORK/mixed.out" 2>&1 || { cat "$WORK/mixed.out" >&2; exit 1; }
MIXED=$(sed '0,/^# castle_sessions mixed-load benchmark/d' "$BENCH/results/mixed-pg$PG_MAJOR.md" | sed 's/^## /### /')

# ---- the report ----
rounds_of() { tr -s ' ' <<<"${TPS[$1]}" | sed 's/ $//; s/ /, /g'; }
# row LABEL DESCRIPTION BASELINE BASELINE_NAME: a row of the throughput table
row() { echo "| $2 | $(median "$1") | $(rounds_of "$1") | $(ratio "$1" "$3")× $4 |"; }
# check WHAT LABEL BASELINE TARGET: a row of the targets table, into CHECKS.
CHECKS=""
FAILED=""
check() {
    local r verdict
    r=$(ratio "$2" "$3")
    verdict=$(awk -v r="$r" -v t="$4" 'BEGIN { print (r >= t) ? "PASS" : "FAIL" }')
    [ "$verdict" = PASS ] || FAILED+="$1; "
    CHECKS+="| $1 | ${r}× | $(ratio_of_medians "$2" "$3")× | ≥ $4× | $verdict |"$'\n'
}
check "authenticate / primary-key floor" authenticate floor 0.9
check "authenticate / PL/pgSQL authenticate" authenticate plpgsql_authenticate 1.7
check "forged token / primary-key floor" forged floor 1.0
check "create_session / bare INSERT" create_session insert 0.9
check "create_session / PL/pgSQL create_session" create_session plpgsql_create_session 1.3
check "authenticate at $BIG / at $NTOKENS sessions" "authenticate, $BIG sessions" "authenticate, $NTOKENS sessions" 0.8
MINUTES=$(( ($(date +%s) - STARTED + 59) / 60 ))
MACHINE="$(sed -n 's/^model name\t*: *//p' /proc/cpuinfo | head -1), $(nproc) vCPUs, \
$(free -g | awk '/^Mem:/{ print $2 }') GB RAM; Linux $(uname -r); Debian $(cat /etc/debian_version); \
$("$PG_BIN/postgres" --version)"

{
cat <<EOF
# castle_sessions benchmark

- Command: \`PG=$PG_MAJOR BENCH_ROUNDS=$ROUNDS BENCH_SECONDS=$T BENCH_BIG=$BIG BENCH_TOKENS=$NTOKENS bash bench/run.sh\` ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT, $MINUTES min)
- Machine: $MACHINE; load average at start $LOAD_AT_START
- Each workload: \`pgbench -n -M prepared -c 2 -j 2 -T $T\`, $ROUNDS interleaved rounds, median shown.
  Reads draw one of $NTOKENS tokens at random from \`bench.tokens\` in the same statement;
  writes draw one of $USERS users. \`synchronous_commit = off\`, \`castle.touch_interval = -1\`
  unless stated.

## Throughput

"vs baseline": the median over rounds of the workload's tps over the baseline's in the same round.

| workload | median tps | rounds | vs baseline |
|---|---|---|---|
$(row floor "primary-key floor: \`SELECT * FROM castle.sessions WHERE id = …\`" floor floor)
$(row authenticate "\`castle.authenticate(token)\`" floor floor)
$(row verify "\`castle.verify(token)\`" floor floor)
$(row forged "\`castle.verify(forged token)\` (bad checksum)" floor floor)
$(row plpgsql_authenticate "PL/pgSQL + pgcrypto \`authenticate(token)\`" floor floor)
$(row plpgsql_verify "PL/pgSQL + pgcrypto \`verify(token)\`" floor floor)
$(row plpgsql_forged "PL/pgSQL + pgcrypto \`verify(forged token)\`" floor floor)
$(row "plpgsql_authenticate, no checksum" "PL/pgSQL + pgcrypto \`authenticate(token)\`, checksum skipped" floor floor)
$(row insert "bare \`INSERT\` of a session row" insert INSERT)
$(row create_session "\`castle.create_session(user)\`" insert INSERT)
$(row plpgsql_create_session "PL/pgSQL + pgcrypto \`create_session(user)\`" insert INSERT)

## Targets

Each check is the median over the $ROUNDS rounds of the two workloads' ratio within the
round (checked), with the ratio of their medians beside it.

| check | median per-round ratio | ratio of medians | target | result |
|---|---|---|---|---|
$CHECKS
## Scale: $NTOKENS versus $BIG sessions

The large table holds $BIG rows, $NTOKENS of them real and spread evenly over ids and heap.

| workload | median tps | rounds |
|---|---|---|
| authenticate, $NTOKENS sessions | $(median "authenticate, $NTOKENS sessions") | $(rounds_of "authenticate, $NTOKENS sessions") |
| authenticate, $BIG sessions | $(median "authenticate, $BIG sessions") | $(rounds_of "authenticate, $BIG sessions") |
| primary-key floor, $BIG sessions | $(median "floor, $BIG sessions") | $(rounds_of "floor, $BIG sessions") |

## Touch: castle.authenticate with used_at written on every call (0) versus never (-1)

| castle.touch_interval | median tps | rounds | ratio |
|---|---|---|---|
| -1 (off) | $(median "touch off") | $(rounds_of "touch off") | 1.00× |
| 0 (every call writes) | $(median "touch on") | $(rounds_of "touch on") | $(ratio "touch on" "touch off")× |

The default, 60 s, writes at most once a minute per session. It is not measured:
with tokens drawn at random, how often it writes depends on the length of the run.

## Instructions per transaction

$CALLGRIND

## Profile: castle.authenticate

$PROFILE

## Mixed load (bench/mixed.sh, also in bench/results/mixed-pg$PG_MAJOR.md)
$MIXED
EOF
if [ -n "$FAILED" ]; then
    echo
    echo "**FAIL: targets missed: ${FAILED%; }.**"
fi
} >"$WORK/report.md"

mkdir -p "$BENCH/results"
cp "$WORK/report.md" "$REPORT"
echo
cat "$REPORT"
echo
echo "(written to ${REPORT#$REPO/})"
exit 0
