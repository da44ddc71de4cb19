# Sourced by bench/run.sh: instructions per transaction under callgrind, the
# one measure a busy VM cannot blur. The bench cluster's server is restarted
# under valgrind; each workload runs as `pgbench -M prepared -c 1` twice, for
# 100 and for 1100 transactions, and the difference between the two backends'
# totals, over 1000, is what one transaction costs the server, connection and
# start-up excluded. Prints a markdown section.
#
# Valgrind's CPU has no SHA extensions, so SHA-256 runs in software there (on
# this machine it runs on the SHA instructions); the section shows it apart.

# callgrind_section CLUSTER: CLUSTER (started, holding database bench) is
# stopped, measured under valgrind, and left stopped.
callgrind_section() {
    local cluster=$1 data="$PGDIR/data" out
    out=$(mktemp -d /tmp/castle-callgrind.XXXXXX)
    if ! command -v valgrind >/dev/null; then
        apt-get install -y -qq valgrind >/dev/null 2>&1 || true
    fi
    if ! command -v valgrind >/dev/null; then
        echo "valgrind was not available: no instruction counts"
        return
    fi
    chown postgres "$out"
    cluster_stop "$cluster"
    # autovacuum off: no worker may exit, and write its own profile, mid-run
    sudo -u postgres valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" \
        "$PG_BIN/postgres" -D "$data" -c autovacuum=off >"$out/server.log" 2>&1 &
    local i
    for i in $(seq 120); do "$PG_BIN/pg_isready" -q && break; sleep 1; done
    "$PG_BIN/pg_isready" -q || { echo "the server did not start under valgrind"; tail "$out/server.log" >&2; return; }

    # cg_total FILE [SYMBOL]: a profile's instructions, or those of SYMBOL and its callees
    cg_total() {
        if [ -z "${2:-}" ]; then
            sed -n 's/^summary: *//p; s/^totals: *//p' "$1" | head -1
        else
            callgrind_annotate --inclusive=yes "$1" 2>/dev/null | awk -v s="$2" 'index($0, s) {
                gsub(",", "", $1); print $1; found = 1; exit } END { if (!found) print 0 }'
        fi
    }
    # cg_per_transaction WORKLOAD: "instructions sha256-instructions" a transaction
    cg_per_transaction() {
        local n profile new before all=() sha=()
        for n in 100 1100; do
            before=$(ls "$out")
            "$PG_BIN/pgbench" -n -M prepared -c 1 -t "$n" -D ntokens="$NTOKENS" -D users="$USERS" \
                -f "$BENCH/workloads/$1.sql" bench >"$out/pgbench.out" 2>&1 || { cat "$out/pgbench.out" >&2; return 1; }
            # the backend writes its profile as it exits, just after pgbench;
            # of the profiles new since, it is the one that ran the most
            for i in $(seq 50); do
                new=$(ls "$out" | grep '^cg\.' | grep -vxF "$before") && break
                sleep 0.2
            done
            sleep 1
            profile=$(for f in $(ls "$out" | grep '^cg\.' | grep -vxF "$before"); do
                echo "$(cg_total "$out/$f") $out/$f"; done | sort -n | tail -1 | cut -d' ' -f2)
            [ -n "$profile" ] || { echo "no profile from the $1 run" >&2; return 1; }
            all+=("$(cg_total "$profile")")
            sha+=("$(cg_total "$profile" 'sha2::sha256::compress256 ')")
        done
        echo "$(( (all[1] - all[0]) / 1000 )) $(( (sha[1] - sha[0]) / 1000 ))"
    }

    declare -A COUNT SHA
    local w counts
    for w in floor authenticate verify forged insert create_session; do
        counts=$(cg_per_transaction "$w") || break
        COUNT[$w]=${counts% *}
        SHA[$w]=${counts#* }
        printf '  %-34s %8s instructions\n' "$w" "${COUNT[$w]}" >&2
    done
    tidy bench
    sudo -u postgres "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 120 stop >/dev/null
    rm -rf "$out"

    # cg_row WORKLOAD DESCRIPTION BASELINE
    cg_row() {
        local w=$1
        awk -v d="$2" -v all="${COUNT[$w]:-0}" -v sha="${SHA[$w]:-0}" -v base="${COUNT[$3]:-1}" -v base_sha="${SHA[$3]:-0}" \
            'BEGIN { printf "| %s | %d | %d | %d | %.2f× | %.2f× |\n", d, all, sha, all - sha,
                     base / all, (base - base_sha) / (all - sha) }'
    }
    echo "Instructions the server runs per transaction, by callgrind (\`pgbench -M prepared -c 1\`,"
    echo "1100 transactions minus 100). \"SHA-256\" is what its compression function took: in"
    echo "software under valgrind, on the CPU's SHA instructions in a real run, where it is"
    echo "about 0.1 µs. \"speed vs baseline\" is the baseline's count over the workload's,"
    echo "so above 1 means fewer instructions than the baseline."
    echo
    echo "| workload | instructions | of which SHA-256 | without SHA-256 | speed vs baseline | without SHA-256 |"
    echo "|---|---|---|---|---|---|"
    cg_row floor "primary-key floor" floor
    cg_row authenticate "\`castle.authenticate(token)\`" floor
    cg_row verify "\`castle.verify(token)\`" floor
    cg_row forged "\`castle.verify(forged token)\`" floor
    cg_row insert "bare \`INSERT\`" insert
    cg_row create_session "\`castle.create_session(user)\`" insert
}
