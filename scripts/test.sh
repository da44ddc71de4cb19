#!/usr/bin/env bash
# Every test, on every major this project supports. For each, the whole suite
# (scripts/suite.sh: the pg_regress files, the isolation specs, the psycopg
# suite; cargo pgrx test on the assert-enabled 18; and, on Debian's 15
# only, the client stacks of tests/clients and the SQL edition of managed/,
# scripts/managed.sh) against:
#   15  Debian 12's PostgreSQL 15, then an assert-enabled 15 (CASTLE_CASSERT=0 skips
#       it), which runs the golden files and the isolation specs but not the
#       integration suite a second time on one major
#   17  Debian 13's PostgreSQL 17, inside a Debian 13 root (scripts/trixie.sh)
#   18  an assert-enabled PostgreSQL 18.6 built from Debian's source (scripts/build_pg.sh)
# each (but the assert-enabled 15) followed by its package (scripts/package.sh,
# from the same release build); then pg_upgrade from 15 to 18 with sessions in
# the database, and each package installed in a clean root of its own
# distribution (tests/packages/install.sh).
#
# PG=17 ./scripts/test.sh (or PG="15 18") runs only those majors; the
# pg_upgrade test runs when both 15 and 18 are among them. Exits non-zero on
# the first failure.
source "$(dirname "$0")/common.sh"
cd "$REPO"

majors=${PG:-15 17 18}
for major in $majors; do
    case "$major" in 15|17|18) ;; *) echo "PG=$major: this project supports 15, 17 and 18" >&2; exit 2 ;; esac
done
has() { [[ " $majors " == *" $1 "* ]]; }
# the assert-enabled 15: with 15, unless CASTLE_CASSERT=0
has_cassert15() { has 15 && [ "${CASTLE_CASSERT:-1}" != 0 ]; }

"$REPO/scripts/setup.sh"
started=$SECONDS
# The Debian 13 root's downloads and installs (mostly waiting on the network)
# go on while the first passes build.
if has 17; then
    mkdir -p target
    "$REPO/scripts/trixie.sh" true >target/trixie-setup.log 2>&1 &
    trixie_setup=$!
    # an early exit does not leave it running (the trap below)
fi
# The assert-enabled servers (scripts/build_pg.sh, four to six minutes of both
# cores each) are built in the background at the lowest priority, beside what never
# measures time: from the end of Debian's 15 integration suite, through its
# shards, client stacks and SQL edition, and the assert-enabled 15's pass (no
# integration suite). Every pass with a refusal-timing test (17's, 18's)
# starts once they are done: under a build's load that test's classifier
# told a reuse apart 70.4% of the time, against a limit of 70%.
builds=
builds_log=target/assert-builds.log
builds_done() {
    [ -n "$builds" ] || return 0
    wait "$builds" || { tail -40 "$builds_log"; echo "building the assert-enabled servers failed" >&2; exit 1; }
    builds=
}
timing_done=
if has 15 && { has 18 || has_cassert15; }; then
    mkdir -p target
    timing_done=$REPO/target/debian15-timing-done
    rm -f "$timing_done"
    wanted=()
    ! has_cassert15 || wanted+=(15)
    ! has 18 || wanted+=(18)
    # A session of its own, so that an early exit stops its make too, and
    # so an autogroup of its own where the kernel groups by session: niced
    # there as well, or the scheduler would give it half the machine. A pass
    # that needs a server first waits for it (build_pg.sh's lock).
    setsid bash -c "echo 19 >/proc/self/autogroup 2>/dev/null || true
        until [ -e '$timing_done' ]; do sleep 2; done
        for major in ${wanted[*]}; do nice -n 19 '$REPO/scripts/build_pg.sh' \$major cassert || exit 1; done" \
        >"$builds_log" 2>&1 &
    builds=$!
fi
trap 'kill "${trixie_setup:-}" 2>/dev/null || true; [ -z "$builds" ] || kill -- "-$builds" 2>/dev/null || true' EXIT
# cargo pgrx test (the codec's unit tests and the #[pg_test]s) runs once,
# where assertions check it: on the assert-enabled 18, or without it the
# assert-enabled 15, or without either on every pass. A test build of its own
# costs a pass three to five minutes, for tests that every pass's golden
# files and integration suite go past.
if has 18; then pgrx_tested=cassert18
elif has_cassert15; then pgrx_tested=cassert15
else pgrx_tested=every; fi
pgrx_test_on() { if [ "$pgrx_tested" = every ] || [ "$pgrx_tested" = "$1" ]; then echo 1; else echo 0; fi; }
passed=()
for major in $majors; do
    case "$major" in
        15)
            say "PostgreSQL 15 (Debian 12's)"
            CASTLE_TARGET=debian15 CASTLE_CLIENT_STACKS=1 CASTLE_SQL_EDITION=1 CASTLE_PGRX_TEST=$(pgrx_test_on debian15) \
                CASTLE_TIMING_DONE=$timing_done "$REPO/scripts/suite.sh"
            CASTLE_TARGET=debian15 "$REPO/scripts/package.sh" --here
            passed+=("15 (Debian 12)")
            if has_cassert15; then
                say "PostgreSQL 15, assert-enabled"
                CASTLE_TARGET=cassert15 CASTLE_INTEGRATION=0 CASTLE_PGRX_TEST=$(pgrx_test_on cassert15) \
                    "$REPO/scripts/suite.sh"
                passed+=("15 (assert-enabled)")
            else
                echo "skipped: the assert-enabled 15 (CASTLE_CASSERT=0)"
            fi
            ;;
        17)
            builds_done
            say "PostgreSQL 17 (Debian 13's, in a Debian 13 root)"
            wait "$trixie_setup" || { cat target/trixie-setup.log; exit 1; }
            "$REPO/scripts/trixie.sh" "CASTLE_PGRX_TEST=$(pgrx_test_on debian17) ./scripts/suite.sh && ./scripts/package.sh --here"
            passed+=("17 (Debian 13)")
            ;;
        18)
            builds_done
            say "PostgreSQL 18, assert-enabled"
            CASTLE_TARGET=cassert18 CASTLE_PGRX_TEST=$(pgrx_test_on cassert18) "$REPO/scripts/suite.sh"
            CASTLE_TARGET=cassert18 "$REPO/scripts/package.sh" --here
            passed+=("18 (assert-enabled)")
            ;;
    esac
done

# From the self-built 15.18, not Debian's 15.20: Debian's stamps every column
# with an attribute option (pg_attver) that 18.6 does not know, so pg_upgrade
# to this 18.6 fails for any database, with or without castle_sessions.
if has_cassert15 && has 18; then
    say "pg_upgrade from 15 to 18 with sessions in the database"
    CASTLE_OLD_BIN=$(pg_bin_of cassert15) CASTLE_NEW_BIN=$(pg_bin_of cassert18) \
        CASTLE_CLUSTER_ROOT="$(cluster_root)" "$VENV/bin/pytest" -q -rfEsP -p no:cacheprovider tests/majors
    passed+=("pg_upgrade 15 to 18")
else
    echo "skipped: pg_upgrade from 15 to 18 (needs PG to include 15 and 18, and the assert-enabled 15)"
fi

# each major's package was built right after its pass, from the same release build
say "packages: installing each in a clean root"
for major in $majors; do
    "$REPO/tests/packages/install.sh" "$major"
    passed+=("package for $major")
done

say "passed in $(((SECONDS - started) / 60)) min: ${passed[*]/%/;}"
