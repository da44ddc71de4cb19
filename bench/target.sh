# Sourced first by bench/run.sh and bench/mixed.sh: PG (15, the default, 17
# or 18) picks the target; for 17 the calling script is run again inside the
# Debian 13 root (scripts/trixie.sh), which has no git, so the commit is
# named here.
case "${PG:-15}" in
    15) export CASTLE_TARGET=debian15 ;;
    17) if [ "${CASTLE_TARGET:-}" != debian17 ]; then
            CASTLE_COMMIT=$(source "$(dirname "$0")/../scripts/common.sh" && measured_commit) \
                exec "$(dirname "$0")/../scripts/trixie.sh" "PG=17 bash bench/$(basename "$0")"
        fi ;;
    18) export CASTLE_TARGET=plain18 ;;
    *) echo "PG=$PG: 15, 17 or 18" >&2; exit 2 ;;
esac
