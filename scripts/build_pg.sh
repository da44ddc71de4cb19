#!/usr/bin/env bash
# scripts/build_pg.sh MAJOR [cassert|plain]: builds an assert-enabled
# PostgreSQL MAJOR (15 or 18) with --enable-cassert --enable-debug, as pgrx
# does for every PostgreSQL it builds (or, with `plain`, one without them, for
# the benchmark: Assert()s slow a server down), from the upstream tarball of Debian's own source package
# (bookworm's postgresql-15, sid's postgresql-18), plus pgaudit from its
# Debian source against it. pg_cron is not built: its Debian source cannot be
# downloaded here (404), so its one test reports itself skipped on these
# servers.
#
# Debian's layout (/usr/lib/postgresql/N, /usr/share/postgresql/N), installed
# with DESTDIR into .cache/pgN-cassert/stage: PostgreSQL finds its files
# relative to its binaries, so the staged server runs where it is, and the
# same tree is what scripts/package.sh turns into a postgresql-N package for a
# clean root. Prints the staged bindir. Everything is cached in the repo's
# ignored .cache folder (the postgres user runs the server from there; a home
# folder is often closed to it), so a second run costs nothing; the machine's
# apt configuration is never changed (a private sources list, derived from the
# machine's own mirror).
source "$(dirname "$0")/common.sh"

MAJOR=${1:?usage: build_pg.sh 15|18 [cassert|plain]}
KIND=${2:-cassert}
# The assert-enabled build at -O1: 4 minutes to build 15 on 2 cores against
# 5.3 at configure's -O2, with every Assert() the same; its servers only run
# tests. The benchmark's build keeps -O2, as Debian's.
OPTIMIZE=()
case "$KIND" in
    cassert) FLAGS=(--enable-cassert --enable-debug) OPTIMIZE=(CFLAGS=-O1) ;;
    plain) FLAGS=() ;;
    *) echo "build_pg.sh: cassert or plain, not $KIND" >&2; exit 2 ;;
esac
case "$MAJOR" in
    15) SUITE=bookworm ;;
    18) SUITE=sid ;;
    *) echo "build_pg.sh: no Debian source for PostgreSQL $MAJOR here (15 or 18)" >&2; exit 2 ;;
esac
CACHE=$REPO/.cache/pg$MAJOR-$KIND
STAGE=$CACHE/stage
BIN=$STAGE/usr/lib/postgresql/$MAJOR/bin
LIB=$STAGE/usr/lib/postgresql/$MAJOR/lib

# One build of a server at a time: scripts/test.sh builds in the background,
# and a pass that needs the server meanwhile waits here, then finds it built.
mkdir -p "$CACHE"
exec 8>"$CACHE.lock"
flock 8

# what the build is made with: a cached one made otherwise is redone
CONFIGURED="${FLAGS[*]}${OPTIMIZE[*]:+ ${OPTIMIZE[*]}} --with-icu --with-openssl --without-readline"
# the isolation tester (tests/isolation), which `make install` leaves out
# (15) or links to the machine's older libpq (18); rebuilt, it finds the
# libpq beside the server's binaries, four levels up
install_isolation() {
    local dir=$CACHE/src/postgresql/src/test/isolation
    { make -C "$dir" clean && make -C "$dir" install rpathdir='$$ORIGIN/../../../..' DESTDIR="$STAGE"
    } >"$CACHE/isolation.log" 2>&1 && touch "$CACHE/isolation-installed"
}
if [ -x "$BIN/postgres" ] && [ -f "$LIB/pgaudit.so" ] && [ -f "$LIB/pgcrypto.so" ] &&
    [ "$(cat "$CACHE/configured" 2>/dev/null)" = "$CONFIGURED" ]; then
    # a build cached before the isolation tester was installed gets it now
    # (never a rebuild, which would empty a stage a server may run from)
    if [ ! -f "$CACHE/isolation-installed" ]; then
        install_isolation || { tail -30 "$CACHE/isolation.log" >&2; exit 1; }
        chmod -R a+rX "$STAGE"
    fi
    echo "$BIN"
    exit 0
fi

need=(dpkg-dev libicu-dev zlib1g-dev libssl-dev pkg-config bison flex)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing build dependencies: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A private apt: deb-src lines for the machine's own Debian mirror.
APT=$CACHE/apt
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$CACHE/src"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) $SUITE main" \
    >"$APT/sources.list"
apt_private() {
    apt-get -q -o Dir::Etc::sourcelist="$APT/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" "$@"
}
cd "$CACHE/src"
if ! ls postgresql-"$MAJOR"_*.orig.tar.bz2 >/dev/null 2>&1 || ! ls pgaudit*.orig.tar.gz >/dev/null 2>&1; then
    say "downloading Debian's source of postgresql-$MAJOR and pgaudit ($SUITE)" >&2
    apt_private update >/dev/null
    apt_private source --download-only "postgresql-$MAJOR" >/dev/null 2>&1 || true
    # pgaudit's Debian packaging is not served, its upstream tarball is: that is all PGXS needs
    apt_private source --download-only "postgresql-$MAJOR-pgaudit" >/dev/null 2>&1 || true
fi
# Only the upstream tarball, without Debian's patches: those move pkglibdir
# outside the tree we install, where `make install` would overwrite the
# machine's own server's modules.
rm -rf postgresql pgaudit && mkdir postgresql pgaudit
tar -xjf "$(ls postgresql-"$MAJOR"_*.orig.tar.bz2 | head -1)" -C postgresql --strip-components=1
tar -xzf "$(ls pgaudit*.orig.tar.gz | head -1)" -C pgaudit --strip-components=1

say "building PostgreSQL $MAJOR ($KIND: ${FLAGS[*]:-no assertions} ${OPTIMIZE[*]}; four to six minutes)" >&2
rm -rf "$STAGE"
(
    cd "$CACHE/src/postgresql"
    env "${OPTIMIZE[@]}" ./configure --prefix="/usr/lib/postgresql/$MAJOR" --datadir="/usr/share/postgresql/$MAJOR" \
        --includedir=/usr/include/postgresql --sysconfdir=/etc/postgresql-common \
        --mandir="/usr/share/postgresql/$MAJOR/man" --docdir="/usr/share/doc/postgresql-doc-$MAJOR" \
        "${FLAGS[@]}" --with-icu --with-openssl --without-readline \
        >"$CACHE/configure.log" 2>&1
    # binaries find the libpq beside them wherever the tree is (psql 18
    # needs libpq 18, and the machine's own libpq is 15's)
    make -j2 rpathdir='$$ORIGIN/../lib' >"$CACHE/make.log" 2>&1
    make install rpathdir='$$ORIGIN/../lib' DESTDIR="$STAGE" >"$CACHE/install.log" 2>&1
    # the contrib modules the tests and the benchmark use (18's pgcrypto needs OpenSSL)
    for module in pgcrypto pg_prewarm; do
        make -C "contrib/$module" install DESTDIR="$STAGE" >>"$CACHE/install.log" 2>&1
    done
    install_isolation
) || { tail -30 "$CACHE"/make.log "$CACHE"/isolation.log 2>/dev/null >&2; exit 1; }
# never anything outside the stage
case "$("$BIN/pg_config" --pkglibdir)" in
    "$STAGE"/*) ;;
    *) echo "the $KIND build's pkglibdir is outside $STAGE" >&2; exit 1 ;;
esac

say "building pgaudit against it" >&2
make -C "$CACHE/src/pgaudit" USE_PGXS=1 PG_CONFIG="$BIN/pg_config" install >"$CACHE/pgaudit.log" 2>&1 ||
    { tail -30 "$CACHE/pgaudit.log" >&2; exit 1; }
[ -f "$LIB/pgaudit.so" ] || { echo "pgaudit did not install into $LIB" >&2; exit 1; }
chmod -R a+rX "$STAGE"
echo "$CONFIGURED" >"$CACHE/configured"
echo "$BIN"
