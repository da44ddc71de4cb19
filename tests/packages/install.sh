#!/usr/bin/env bash
# tests/packages/install.sh MAJOR: installs target/packages' postgresql-MAJOR
# package the way a user would, in a clean root of the distribution it is
# for, and checks it works there:
#   15  Debian 12: apt-get install postgresql-15 ./postgresql-15-castle-sessions_*.deb
#   17  Debian 13: apt-get install postgresql-17 ./postgresql-17-castle-sessions_*.deb
#   18  Debian 12, with the PostgreSQL 18.6 of scripts/build_pg.sh packaged as a
#       local postgresql-18 (Debian 12 and 13 have no 18 of their own)
# then the cluster Debian creates, started with pg_ctlcluster, CREATE
# EXTENSION castle_sessions, the tour, and the pg_regress files against it.
source "$(dirname "$0")/../../scripts/common.sh"
source "$REPO/scripts/roots.sh"
in_private_mounts "$0" "$@"

MAJOR=${1:?usage: install.sh 15|17|18}
VERSION=$CASTLE_VERSION
DEB=$REPO/target/packages/postgresql-$MAJOR-castle-sessions_${VERSION}_amd64.deb
[ -f "$DEB" ] || { echo "no $DEB: run scripts/package.sh $MAJOR" >&2; exit 1; }
case "$MAJOR" in
    15|18) SUITE=bookworm ;;
    17) SUITE=trixie ;;
    *) echo "install.sh: 15, 17 or 18" >&2; exit 2 ;;
esac
PORT=$((25430 + MAJOR))
ROOT=$ROOTS/package-$MAJOR
say "installing $(basename "$DEB") in a clean Debian $SUITE root"
fresh_root "$SUITE" "$ROOT"
trap 'root_run "$ROOT" "pg_ctlcluster $MAJOR main stop" >/dev/null 2>&1 || true; root_umount "$ROOT"' EXIT
# the downloads are kept between roots of one suite
mkdir -p "$ROOTS/archives-$SUITE/partial" "$ROOT/var/cache/apt/archives"
root_mount "$ROOT"
mount --bind "$ROOTS/archives-$SUITE" "$ROOT/var/cache/apt/archives"
cp "$DEB" "$ROOT/tmp/"
server=postgresql-$MAJOR
if [ "$MAJOR" = 18 ]; then
    # the self-built server as a package, without the castle_sessions files
    # the 18 suite installed into its tree
    stage=$REPO/.cache/pg18-cassert/stage
    built=$("$(pg_bin_of cassert18)/pg_config" --version | awk '{print $2}')
    tree=$ROOT/tmp/postgresql-18
    mkdir -p "$tree/DEBIAN"
    cp -a "$stage/usr" "$tree/"
    rm -rf "$tree/usr/include"
    find "$tree" -name 'castle_sessions*' -exec rm -f {} +
    cat >"$tree/DEBIAN/control" <<CONTROL
Package: postgresql-18
Version: $built-0castletest
Architecture: $(dpkg --print-architecture)
Depends: postgresql-common, libicu72, libssl3, zlib1g
Maintainer: castle_sessions maintainers <maintainers@users.noreply.r-seed-7c8b9efe.example>
Description: PostgreSQL $built built with --enable-cassert for castle_sessions' tests
CONTROL
    dpkg-deb -Zgzip -z1 --root-owner-group --build "$tree" "$ROOT/tmp/postgresql-18_$built-0castletest_amd64.deb" >/dev/null
    rm -rf "$tree"
    server=./postgresql-18_$built-0castletest_amd64.deb
fi
root_run "$ROOT" "apt-get update -qq && cd /tmp &&
    apt-get install -y -qq --no-install-recommends $server ./$(basename "$DEB") >/tmp/apt.log 2>&1 ||
    { tail -20 /tmp/apt.log; exit 1; }"
# Debian's postinst makes 15/main and 17/main; a server outside Debian's
# packaging gets its cluster from postgresql-common, as an admin would make it
[ -d "$ROOT/etc/postgresql/$MAJOR/main" ] || root_run "$ROOT" "pg_createcluster $MAJOR main >/dev/null"
conf=$ROOT/etc/postgresql/$MAJOR/main
{
    echo "port = $PORT"
    echo "listen_addresses = '127.0.0.1'"
    # as the README advises: settings checked from a session's first statement
    echo "shared_preload_libraries = 'castle_sessions'"
} >>"$conf/postgresql.conf"
# the test connects over loopback as postgres, without a password
printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$conf/pg_hba.conf"
root_run "$ROOT" "pg_ctlcluster $MAJOR main start"
root_run "$ROOT" "su postgres -c \"psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p $PORT -c 'CREATE DATABASE tour'\" &&
    su postgres -c \"psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p $PORT -d tour -c 'CREATE EXTENSION castle_sessions'\""
cp "$REPO/scripts/tour.sql" "$ROOT/tmp/tour.sql"
root_run "$ROOT" "su postgres -c \"psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p $PORT -d tour -f /tmp/tour.sql\"" >"$ROOT/tmp/tour.out"
grep -q . "$ROOT/tmp/tour.out" || { echo "the tour printed nothing" >&2; exit 1; }
echo "the tour ran ($(wc -l <"$ROOT/tmp/tour.out") lines)"

# The router extension from the same package, on Debian's PL/Proxy, over two
# shards of this cluster (docs/sharding.md)
if [ "$MAJOR" != 18 ]; then
    say "castle_sessions_router on postgresql-$MAJOR-plproxy over two shards"
    root_run "$ROOT" "apt-get install -y -qq --no-install-recommends postgresql-$MAJOR-plproxy >/tmp/apt-plproxy.log 2>&1 ||
        { tail -20 /tmp/apt-plproxy.log; exit 1; }"
    cat >"$ROOT/tmp/router.sql" <<SQL
CREATE DATABASE shard_a;
CREATE DATABASE shard_b;
CREATE DATABASE router;
\\c shard_a
CREATE EXTENSION castle_sessions;
SELECT castle.configure_shard(0, 2);
\\c shard_b
CREATE EXTENSION castle_sessions;
SELECT castle.configure_shard(1, 2);
\\c router
CREATE EXTENSION castle_sessions_router CASCADE;
CREATE SERVER castle_shards FOREIGN DATA WRAPPER plproxy OPTIONS (
    p0 'host=/var/run/postgresql port=$PORT dbname=shard_a',
    p1 'host=/var/run/postgresql port=$PORT dbname=shard_b');
CREATE USER MAPPING FOR postgres SERVER castle_shards OPTIONS (user 'postgres');
DO \$\$
DECLARE
    token text;
BEGIN
    FOR u IN 1..20 LOOP
        token := castle.create_session(u::bigint);
        IF (castle.authenticate(token)).user_id IS DISTINCT FROM u::text THEN
            RAISE EXCEPTION 'the router did not give user %''s session back', u;
        END IF;
    END LOOP;
    IF (SELECT live_sessions FROM castle.overview()) <> 20 THEN
        RAISE EXCEPTION 'the shards do not hold the 20 sessions';
    END IF;
END \$\$;
\\c shard_a
SELECT count(*) > 0 AS has_sessions FROM castle.sessions \\gset
\\if :has_sessions
\\else
\\echo 'shard_a holds no session'
SELECT 1/0;
\\endif
SQL
    root_run "$ROOT" "su postgres -c \"psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p $PORT -d postgres -f /tmp/router.sql\""
    echo "the router signed in and checked 20 users over two shards"
else
    echo "skipped: castle_sessions_router on 18 (no Debian release packages PL/Proxy for 18)"
fi

say "pg_regress against the packaged $MAJOR (port $PORT)"
regress="cd '$REPO' && rm -rf target/packages/regress-$MAJOR && \
    \$(\$PG_CONFIG --pkglibdir)/pgxs/src/test/regress/pg_regress --bindir=\$PG_BIN \
    --inputdir=tests/pg_regress --outputdir=target/packages/regress-$MAJOR \
    --host=127.0.0.1 --port=$PORT --user=postgres --dbname=castle_regress \
    --load-extension=castle_sessions \$(cd tests/pg_regress/sql && ls -1 *.sql | sed 's/\.sql\$//' | sort) ||
    { cat target/packages/regress-$MAJOR/regression.diffs; exit 1; }"
case "$MAJOR" in
    15) (PG_CONFIG=$(pg_bin_of debian15)/pg_config PG_BIN=$(pg_bin_of debian15) bash -c "$regress") ;;
    17) "$REPO/scripts/trixie.sh" "PG_CONFIG=/usr/lib/postgresql/17/bin/pg_config PG_BIN=/usr/lib/postgresql/17/bin && $regress" ;;
    18) (PG_CONFIG=$(pg_bin_of cassert18)/pg_config PG_BIN=$(pg_bin_of cassert18) bash -c "$regress") ;;
esac
