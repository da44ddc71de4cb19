#!/usr/bin/env bash
# scripts/package.sh [MAJOR...]: builds postgresql-N-castle-sessions_<version>_amd64.deb
# for each of 15, 17 and 18 (all three by default) into target/packages:
# 15 against Debian 12's postgresql-15, 17 inside the Debian 13 root against
# Debian 13's postgresql-17, 18 against the PostgreSQL 18.6 that
# scripts/build_pg.sh builds. `cargo pgrx package` with each major's own
# pg_config, laid out the way Debian lays out every extension package, so
# majors install side by side.
source "$(dirname "$0")/common.sh"

OUT=$REPO/target/packages
VERSION=$CASTLE_VERSION

# deb_from_pgrx: the .deb of the major this script runs for (CASTLE_TARGET).
deb_from_pgrx() {
    "$REPO/scripts/setup.sh" >&2
    local log=${CARGO_TARGET_DIR:-$REPO/target}/package.log
    local built=${CARGO_TARGET_DIR:-$REPO/target}/release/castle_sessions-pg$PG_MAJOR
    # cargo pgrx package only adds to its folder: nothing of another build may stay
    rm -rf "$built"
    say "cargo pgrx package --pg-config $PG_CONFIG" >&2
    (cd "$REPO" && cargo pgrx package --pg-config "$PG_CONFIG" >"$log" 2>&1) || { tail -30 "$log" >&2; exit 1; }
    [ "$(find "$built" -name castle_sessions.so | wc -l)" = 1 ] ||
        { echo "cargo pgrx package did not leave exactly one castle_sessions.so in $built" >&2; exit 1; }
    local name=postgresql-$PG_MAJOR-castle-sessions
    local tree=$OUT/$name
    rm -rf "$tree"
    mkdir -p "$tree/DEBIAN" "$tree/usr/lib/postgresql/$PG_MAJOR/lib" \
        "$tree/usr/share/postgresql/$PG_MAJOR/extension" "$tree/usr/share/doc/$name"
    # Debian's paths, whatever the pg_config it was built with says
    find "$built" -name 'castle_sessions.so' -exec cp {} "$tree/usr/lib/postgresql/$PG_MAJOR/lib/" \;
    find "$built" -path '*/extension/*' \( -name 'castle_sessions.control' -o -name 'castle_sessions--*.sql' \) \
        -exec cp {} "$tree/usr/share/postgresql/$PG_MAJOR/extension/" \;
    # every release and upgrade script, so any earlier version updates in place
    cp "$REPO"/sql/castle_sessions--*.sql "$tree/usr/share/postgresql/$PG_MAJOR/extension/"
    # the router extension: SQL only, for a database with PL/Proxy (Suggests)
    router_files "$tree/usr/share/postgresql/$PG_MAJOR/extension"
    [ -f "$tree/usr/lib/postgresql/$PG_MAJOR/lib/castle_sessions.so" ] &&
        [ -f "$tree/usr/share/postgresql/$PG_MAJOR/extension/castle_sessions--$VERSION.sql" ] ||
        { echo "cargo pgrx package left no library or no castle_sessions--$VERSION.sql in $built" >&2; exit 1; }
    strip --strip-debug "$tree/usr/lib/postgresql/$PG_MAJOR/lib/castle_sessions.so"
    {
        echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
        echo "Upstream-Name: castle_sessions"
        echo
        echo "Files: *"
        echo "License: MIT"
        echo
        sed 's/^$/./; s/^/ /' "$REPO/LICENSE"
    } >"$tree/usr/share/doc/$name/copyright"
    cat >"$tree/DEBIAN/control" <<CONTROL
Package: $name
Version: $VERSION
Section: database
Priority: optional
Architecture: $(dpkg --print-architecture)
Depends: postgresql-$PG_MAJOR, libc6 (>= $(ldd --version | head -1 | awk '{print $NF}'))
Suggests: postgresql-$PG_MAJOR-plproxy
Maintainer: castle_sessions maintainers <maintainers@users.noreply.r-seed-7c8b9efe.example>
Description: Session tokens inside PostgreSQL $PG_MAJOR
 castle_sessions puts session management inside the database:
 castle.create_session(user_id, ttl) and castle.authenticate(token) for
 every application, language and driver. Generation, hashing, trimming
 and expiry happen in PostgreSQL. With PL/Proxy, castle_sessions_router
 offers the same API over a set of shards.
CONTROL
    find "$tree" -type d -exec chmod 0755 {} + && find "$tree" -type f -exec chmod 0644 {} +
    dpkg-deb -Zxz --root-owner-group --build "$tree" "$OUT/${name}_${VERSION}_$(dpkg --print-architecture).deb" >/dev/null
    rm -rf "$tree"
    echo "$OUT/${name}_${VERSION}_$(dpkg --print-architecture).deb"
}

if [ "${1:-}" = --here ]; then
    mkdir -p "$OUT" && deb_from_pgrx
    exit 0
fi
mkdir -p "$OUT"
for major in ${@:-15 17 18}; do
    case "$major" in
        15) CASTLE_TARGET=debian15 "$REPO/scripts/package.sh" --here ;;
        17) "$REPO/scripts/trixie.sh" ./scripts/package.sh --here ;;
        18) CASTLE_TARGET=cassert18 "$REPO/scripts/package.sh" --here ;;
        *) echo "package.sh: PostgreSQL 15, 17 or 18, not $major" >&2; exit 2 ;;
    esac
done
