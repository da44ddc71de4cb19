#!/usr/bin/env bash
# The mixed-load benchmark: what a site's requests meet, with the defaults a
# user gets. bench/run.sh runs it last; alone: PG=15|17|18 bash bench/mixed.sh
#
# A throwaway cluster of its own ("mixed", port 25421), castle_sessions
# preloaded (its standing worker records uses), castle.touch_interval at its
# default (60 s). 100,000 sessions of their own users to authenticate, and
# 10,000 users at castle.max_sessions (3 sessions each) to sign in again.
#
#   mix:        95% castle.authenticate(one of the 100,000 tokens)
#                5% castle.create_session(a user at the limit: trims the oldest)
#   floor mix:  95% SELECT of the session row by primary key
#                5% bare INSERT of a session row
#
# 8 clients. After a warm-up of one touch_interval (every token drawn has
# been used, so the share of checks that find a write due is the steady
# one), MIXED_ROUNDS interleaved rounds of the two mixes, MIXED_SECONDS each;
# then MIXED_CLIENT_ROUNDS rounds of authenticate against the floor at 16 and
# 64 clients, each side MIXED_STEADY_SECONDS, in a steady state (see below),
# and at 16 also two forms without the Function Scan (not targets, 10 s: where
# the time goes): one column of authenticate's row, and castle.is_valid.
# Latencies come from pgbench's per-transaction log. Writes the report to
# stdout and bench/results/mixed-pgNN.md; FAIL lines name missed targets.
#
#   MIXED_ROUNDS   interleaved rounds                  (default 5)
#   MIXED_SECONDS  seconds per mix per round           (default 10)
#   MIXED_WARMUP   seconds of the mix before measuring (default 60, the touch_interval)
#   MIXED_CLIENT_ROUNDS   rounds at 16 and 64 clients, best even (default 4)
#   MIXED_STEADY_SECONDS  seconds per workload in those rounds, at least the
#                         touch_interval (default 60)
source "$(dirname "$0")/target.sh"
source "$(dirname "$0")/../scripts/common.sh"
COMMIT=${CASTLE_COMMIT:-$(measured_commit)}
ROUNDS=${MIXED_ROUNDS:-5}
T=${MIXED_SECONDS:-10}
WARMUP=${MIXED_WARMUP:-60}
CLIENT_ROUNDS=${MIXED_CLIENT_ROUNDS:-4}
STEADY=${MIXED_STEADY_SECONDS:-60}
PORT=25421
BENCH="$REPO/bench"
REPORT="$BENCH/results/mixed-pg$PG_MAJOR.md"
WORK=$(mktemp -d)
STARTED=$(date +%s)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

"$REPO/scripts/setup.sh"
install_extension
trap 'cluster_stop mixed; rm -rf "$WORK"' EXIT
cluster_stop mixed
rm -rf "$(cluster_root)/mixed"
cluster_start mixed $PORT "shared_preload_libraries = 'castle_sessions'" "shared_buffers = 1GB" \
    "synchronous_commit = off" "max_wal_size = 16GB" "checkpoint_timeout = 1h" "max_connections = 100"

say "mixed load: loading 100,000 sessions and 10,000 users at their limit"
psql_at postgres -c "CREATE DATABASE mixed"
psql_at mixed -c "CREATE EXTENSION castle_sessions" -c "CREATE EXTENSION pg_prewarm" \
    -f "$BENCH/plpgsql.sql" -f "$BENCH/setup.sql"
psql_at mixed -c "CALL bench.load_tokens(100000)" -c "CALL bench.load_users_at_limit(10000)"
psql_at mixed -c "VACUUM (FREEZE, ANALYZE)" -c "SELECT pg_prewarm(c) FROM unnest(ARRAY[
    'castle.sessions', 'castle.sessions_pkey', 'bench.tokens', 'bench.tokens_pkey']::regclass[]) AS c" >/dev/null

# pgbench_run LABEL CLIENTS SCRIPT... : one run of T seconds (or $SECONDS_OVERRIDE);
# prints its tps. The two mixes log every transaction (their latencies are
# read); the other runs log nothing, which would cost both sides a line a
# transaction and the disk a gigabyte a round.
pgbench_run() {
    local label=$1 clients=$2 log=(); shift 2
    rm -f "$WORK"/log.*
    case $label in mix | floor_mix) log=(-l --log-prefix="$WORK/log") ;; esac
    "$PG_BIN/pgbench" -n -M prepared -c "$clients" -j 2 -T "${SECONDS_OVERRIDE:-$T}" -D ntokens=100000 \
        -D users=1000000 -D at_limit=10000 "${log[@]}" "$@" mixed >"$WORK/pgbench.out" 2>&1 || {
        cat "$WORK/pgbench.out" >&2; exit 1; }
    # client transaction latency(us) script epoch us: one line a transaction
    if [ ${#log[@]} -gt 0 ]; then cat "$WORK"/log.* >>"$WORK/latencies.$label"; fi
    awk '/^tps = /{ printf "%.0f", $3 }' "$WORK/pgbench.out"
}
declare -A TPS
measure() {   # measure LABEL CLIENTS SCRIPT...
    local label=$1 tps
    tps=$(pgbench_run "$@") || exit 1
    TPS[$label]="${TPS[$label]:-}$tps "
    printf '  %-34s %8s tps\n' "$label" "$tps" >&2
}
# ratio A B: the median over rounds of A's tps over B's in the same round
ratio() {
    paste -d' ' <(tr ' ' '\n' <<<"${TPS[$1]}" | grep .) <(tr ' ' '\n' <<<"${TPS[$2]}" | grep .) |
        awk '{ print $1 / $2 }' | sort -g | awk '{ v[NR] = $1 } END {
            printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
median() { tr ' ' '\n' <<<"${TPS[$1]}" | grep . | sort -n | awk '{ v[NR] = $1 } END {
    print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
# percentile LABEL SCRIPT_NO P: the P-th percentile latency (ms) of one script's transactions
percentile() {
    awk -v s="$2" '$4 == s { print $3 }' "$WORK/latencies.$1" | sort -n | awk -v p="$3" '
        { v[NR] = $1 } END { i = int(NR * p / 100); if (i < 1) i = 1; printf "%.3f", v[i] / 1000 }'
}
# counters of castle.stats, as "authentications touches_written touches_skipped"
counters() {
    psql_at mixed -At -F' ' -c "SELECT authentications, touches_written, touches_skipped
                                  FROM castle.stats WHERE datname = 'mixed'"
}

MIX=(-f "$BENCH/workloads/authenticate.sql@95" -f "$BENCH/workloads/sign_in_at_limit.sql@5")
FLOOR_MIX=(-f "$BENCH/workloads/floor.sql@95" -f "$BENCH/workloads/insert.sql@5")
INSERT_HASH=$(sed -n "s/.*VALUES ('\([0-9a-f]\{64\}\)'.*/\1/p" "$BENCH/workloads/insert.sql")
tidy() {
    psql_at mixed -c "DELETE FROM castle.sessions WHERE hash = '$INSERT_HASH'" -c "VACUUM ANALYZE castle.sessions" >/dev/null
}

say "mixed load: warm-up, $WARMUP s of the mix"
SECONDS_OVERRIDE=$WARMUP PGOPTIONS="-c castle.touch_interval=60" measure warmup 8 "${MIX[@]}"
read -r auth0 written0 skipped0 <<<"$(counters)"
for round in $(seq "$ROUNDS"); do
    say "mixed load, round $round of $ROUNDS"
    PGOPTIONS="-c castle.touch_interval=60" measure mix 8 "${MIX[@]}"
    measure floor_mix 8 "${FLOOR_MIX[@]}"
    tidy
done
read -r auth1 written1 skipped1 <<<"$(counters)"
DUE=$(awk -v a=$((auth1 - auth0)) -v w=$((written1 - written0)) -v s=$((skipped1 - skipped0)) \
    'BEGIN { printf "%.2f%% (%d uses recorded, %d dropped, of %d checks)", a ? 100 * (w + s) / a : 0, w, s, a }')

# Authenticate against the floor at 16 and 64 clients, in a steady state:
# each session's write falls due once a minute of the clock, and the floor
# writes none, so a short run of authenticate after the floor's would write
# the floor's minute as well (4-5 times the steady share, measured). So each
# run lasts one touch_interval, and every session falls due once in it: at
# its first use in a run after the floor's (the sessions were last written a
# minute or more before), and 60 s after its write in the run before in the
# second of two runs in a row. Every session used is written once, as on a
# site whose requests never pause (but in a wave at the start of the first
# run, where a site's writes spread over the minute). Each run is paired with the
# floor's run next to it, in mirrored order (floor 16, authenticate 16 and
# 64, floor 64; then the reverse), so that the machine's drift over a round
# favours neither side.
declare -A CHECKED WRITES_DUE
steady() {   # steady LABEL CLIENTS: one measured run of authenticate, its checks and writes counted
    local auth0 written0 skipped0 auth1 written1 skipped1
    read -r auth0 written0 skipped0 <<<"$(counters)"
    SECONDS_OVERRIDE=$STEADY PGOPTIONS="-c castle.touch_interval=60" measure "$1" "$2" -f "$BENCH/workloads/authenticate.sql"
    read -r auth1 written1 skipped1 <<<"$(counters)"
    CHECKED[$2]=$(( ${CHECKED[$2]:-0} + auth1 - auth0 ))
    WRITES_DUE[$2]=$(( ${WRITES_DUE[$2]:-0} + written1 - written0 + skipped1 - skipped0 ))
}
floor() { SECONDS_OVERRIDE=$STEADY measure "floor, $1" "$1" -f "$BENCH/workloads/floor.sql"; }
for round in $(seq "$CLIENT_ROUNDS"); do
    say "authenticate at 16 and 64 clients, round $round of $CLIENT_ROUNDS"
    if [ $((round % 2)) = 1 ]; then
        floor 16; steady "authenticate, 16" 16; steady "authenticate, 64" 64; floor 64
    else
        floor 64; steady "authenticate, 64" 64; steady "authenticate, 16" 16; floor 16
    fi
    PGOPTIONS="-c castle.touch_interval=60" measure "authenticate, one column, 16" 16 -f "$BENCH/workloads/authenticate_user_id.sql"
    measure "is_valid, 16" 16 -f "$BENCH/workloads/is_valid.sql"
done

CHECKS=""
FAILED=""
check() {   # check WHAT VALUE TARGET (>= or <=)
    local verdict
    verdict=$(awk -v v="$2" -v t="$3" -v op="$4" 'BEGIN { print ((op == ">=") ? (v >= t) : (v <= t)) ? "PASS" : "FAIL" }')
    [ "$verdict" = PASS ] || FAILED+="$1; "
    CHECKS+="| $1 | ${2}× | $4 $3× | $verdict |"$'\n'
}
lat_ratio() { awk -v a="$(percentile "$1" "$2" "$3")" -v b="$(percentile "$4" "$5" "$3")" 'BEGIN { printf "%.2f", a / b }'; }
check "mix / floor mix, throughput" "$(ratio mix floor_mix)" 0.8 ">="
check "authenticate p99 / primary-key read p99" "$(lat_ratio mix 0 99 floor_mix 0)" 1.5 "<="
check "sign-in at the limit p99 / bare INSERT p99" "$(lat_ratio mix 1 99 floor_mix 1)" 2 "<="
check "authenticate / floor, 16 clients" "$(ratio "authenticate, 16" "floor, 16")" 0.9 ">="
check "authenticate / floor, 64 clients" "$(ratio "authenticate, 64" "floor, 64")" 0.9 ">="
due_share() {   # due_share CLIENTS: the share of checks that found a write due
    awk -v a="${CHECKED[$1]}" -v w="${WRITES_DUE[$1]}" 'BEGIN { printf "%.2f%% (%d of %d checks)", a ? 100 * w / a : 0, w, a }'
}
lat_row() {   # lat_row DESCRIPTION LABEL SCRIPT_NO
    echo "| $1 | $(percentile "$2" "$3" 50) | $(percentile "$2" "$3" 99) | $(percentile "$2" "$3" 99.9) |"
}

mkdir -p "$BENCH/results"
{
cat <<EOF
# castle_sessions mixed-load benchmark

- Command: \`PG=$PG_MAJOR MIXED_ROUNDS=$ROUNDS MIXED_SECONDS=$T MIXED_WARMUP=$WARMUP MIXED_CLIENT_ROUNDS=$CLIENT_ROUNDS MIXED_STEADY_SECONDS=$STEADY bash bench/mixed.sh\` ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT, $(( ($(date +%s) - STARTED + 59) / 60 )) min)
- Machine: $(sed -n 's/^model name\t*: *//p' /proc/cpuinfo | head -1), $(nproc) vCPUs; load average at start $LOAD_AT_START; $("$PG_BIN/postgres" --version)
- Defaults a user gets: \`castle.touch_interval = 60s\`, \`castle.max_sessions = 3\`, the library preloaded
  (uses recorded by its standing worker). \`synchronous_commit = off\` for both sides.
- Each mix: \`pgbench -M prepared -c 8 -j 2 -T $T\`, $ROUNDS interleaved rounds after a $WARMUP s warm-up.
- At 16 and 64 clients: $CLIENT_ROUNDS rounds of $STEADY s runs, each run of \`castle.authenticate\` next to
  the floor's it is compared with, in mirrored order (floor 16, authenticate 16, authenticate 64, floor 64;
  then the reverse). Every session falls due once in each authenticate run, so each run writes
  every session it uses once (in a wave at the start of the first run of two).

## Throughput

| workload | median tps | rounds |
|---|---|---|
| mix: 95% \`castle.authenticate\`, 5% \`castle.create_session\` of a user at the limit | $(median mix) | ${TPS[mix]} |
| floor mix: 95% primary-key \`SELECT\`, 5% bare \`INSERT\` | $(median floor_mix) | ${TPS[floor_mix]} |
| \`castle.authenticate\`, 16 clients | $(median "authenticate, 16") | ${TPS["authenticate, 16"]} |
| primary-key floor, 16 clients | $(median "floor, 16") | ${TPS["floor, 16"]} |
| \`castle.authenticate\`, 64 clients | $(median "authenticate, 64") | ${TPS["authenticate, 64"]} |
| primary-key floor, 64 clients | $(median "floor, 64") | ${TPS["floor, 64"]} |
| \`(castle.authenticate(t)).user_id\`, 16 clients | $(median "authenticate, one column, 16") | ${TPS["authenticate, one column, 16"]} |
| \`castle.is_valid(t)\`, 16 clients | $(median "is_valid, 16") | ${TPS["is_valid, 16"]} |

Checks that found a \`used_at\` write due, in the measured mix rounds: $DUE.
In the rounds of \`castle.authenticate\` alone: $(due_share 16) at 16 clients, $(due_share 64) at 64.

At 16 clients, against the floor in the same round (not targets: the check alone, and
the row returned without the Function Scan): \`SELECT * FROM castle.authenticate(t)\` $(ratio "authenticate, 16" "floor, 16")×,
\`(castle.authenticate(t)).user_id\` $(ratio "authenticate, one column, 16" "floor, 16")×,
\`castle.is_valid(t)\` $(ratio "is_valid, 16" "floor, 16")×.

## Latency (ms), every transaction of every measured round

| transaction | p50 | p99 | p99.9 |
|---|---|---|---|
$(lat_row "mix: \`castle.authenticate\`" mix 0)
$(lat_row "floor mix: primary-key \`SELECT\`" floor_mix 0)
$(lat_row "mix: \`castle.create_session\` at the limit" mix 1)
$(lat_row "floor mix: bare \`INSERT\`" floor_mix 1)

## Targets

| check | measured | target | result |
|---|---|---|---|
$CHECKS
EOF
if [ -n "$FAILED" ]; then
    echo "**FAIL: targets missed: ${FAILED%; }.**"
fi
} >"$REPORT"
echo
cat "$REPORT"
echo "(written to ${REPORT#$REPO/})"
