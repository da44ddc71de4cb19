#!/usr/bin/env bash
# Every test, on every major this project supports. For each, the whole suite
# (scripts/suite.sh: cargo pgrx test, the pg_regress files, the psycopg
# suite; and, on Debian's 15 only, the client stacks of tests/clients and the
# SQL edition of managed/, scripts/managed.sh) against:
#   15  Debian 12's PostgreSQL 15, then an assert-enabled 15 (CASTLE_CASSERT=0 skips
#       it), which runs cargo pgrx test and the golden files but not the
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

"$REPO/scripts/setup.sh"
started=$SECONDS
# The Debian 13 root's downloads and installs (mostly waiting on the network)
# go on while the first passes build.
if has 17; then
    mkdir -p target
    "$REPO/scripts/trixie.sh" true >target/trixie-setup.log 2>&1 &
    trixie_setup=$!
    # an early exit does not leave it running
    trap 'kill "$trixie_setup" 2>/dev/null || true' EXIT
fi
passed=()
for major in $majors; do
    case "$major" in
        15)
            say "PostgreSQL 15 (Debian 12's)"
            # cargo pgrx test runs on the assert-enabled 15 when it runs
            pgrx_test=1
            if [ "${CASTLE_CASSERT:-1}" != 0 ]; then pgrx_test=0; fi
            CASTLE_TARGET=debian15 CASTLE_CLIENT_STACKS=1 CASTLE_SQL_EDITION=1 CASTLE_PGRX_TEST=$pgrx_test \
                "$REPO/scripts/suite.sh"
            CASTLE_TARGET=debian15 "$REPO/scripts/package.sh" --here
            passed+=("15 (Debian 12)")
            if [ "${CASTLE_CASSERT:-1}" != 0 ]; then
                say "PostgreSQL 15, assert-enabled"
                CASTLE_TARGET=cassert15 CASTLE_INTEGRATION=0 "$REPO/scripts/suite.sh"
                passed+=("15 (assert-enabled)")
            else
                echo "skipped: the assert-enabled 15 (CASTLE_CASSERT=0)"
            fi
            ;;
        17)
            say "PostgreSQL 17 (Debian 13's, in a Debian 13 root)"
            wait "$trixie_setup" || { cat target/trixie-setup.log; exit 1; }
            "$REPO/scripts/trixie.sh" "./scripts/suite.sh && ./scripts/package.sh --here"
            passed+=("17 (Debian 13)")
            ;;
        18)
            say "PostgreSQL 18, assert-enabled"
            CASTLE_TARGET=cassert18 "$REPO/scripts/suite.sh"
            CASTLE_TARGET=cassert18 "$REPO/scripts/package.sh" --here
            passed+=("18 (assert-enabled)")
            ;;
    esac
done

# From the self-built 15.18, not Debian's 15.20: Debian's stamps every column
# with an attribute option (pg_attver) that 18.6 does not know, so pg_upgrade
# to this 18.6 fails for any database, with or without castle_sessions.
if has 15 && has 18 && [ "${CASTLE_CASSERT:-1}" != 0 ]; then
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
