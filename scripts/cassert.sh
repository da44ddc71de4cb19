#!/usr/bin/env bash
# Builds PostgreSQL 15 from Debian's own source package with assertions on
# (--enable-cassert --enable-debug), as pgrx does for every PostgreSQL it
# builds, plus pgaudit from its Debian source against it. (pg_cron is not
# built: the Debian packaging of its source cannot be downloaded here, so the
# pg_cron test reports itself skipped on this server.)
# Prints the install prefix. Everything is cached in the repo's ignored .cache
# folder (the postgres user runs the server from there; a home folder is
# often closed to it), so a second run costs nothing; the machine's apt
# configuration is never changed (a private sources list, derived from the
# machine's own mirror).
source "$(dirname "$0")/common.sh"

CACHE=$REPO/.cache/pg15-cassert
PREFIX=$CACHE/install
SUITE=bookworm

if [ -x "$PREFIX/bin/postgres" ] && [ -f "$("$PREFIX/bin/pg_config" --pkglibdir)/pgaudit.so" ] &&
    [ -f "$("$PREFIX/bin/pg_config" --pkglibdir)/pgcrypto.so" ]; then
    echo "$PREFIX"
    exit 0
fi

need=(dpkg-dev libicu-dev zlib1g-dev pkg-config bison flex)
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
mirror=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
[ -n "$mirror" ] || mirror=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -1)
[ -n "$mirror" ] || { echo "no Debian mirror in the machine's apt configuration" >&2; exit 1; }
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $SUITE main" >"$APT/sources.list"
apt_private() {
    apt-get -q -o Dir::Etc::sourcelist="$APT/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" "$@"
}
if [ ! -d "$CACHE/src/postgresql" ] || [ ! -d "$CACHE/src/pgaudit" ]; then
    say "downloading Debian's source of postgresql-15 and pgaudit ($SUITE)" >&2
    apt_private update >/dev/null
    # The upstream tarball of Debian's source package, without Debian's
    # patches: those move pkglibdir to /usr/lib/postgresql/15/lib, where
    # `make install` would overwrite the machine's own server's modules.
    (cd "$CACHE/src" && apt_private source --download-only postgresql-15 >/dev/null 2>&1)
    (cd "$CACHE/src" && rm -rf postgresql && mkdir postgresql &&
        tar -xjf "$(ls postgresql-15_*.orig.tar.bz2 | head -1)" -C postgresql --strip-components=1)
    # pgaudit's Debian packaging is not served, its upstream tarball is: that is all PGXS needs
    (cd "$CACHE/src" && apt_private source --download-only postgresql-15-pgaudit >/dev/null 2>&1 || true)
    (cd "$CACHE/src" && rm -rf pgaudit && mkdir pgaudit &&
        tar -xzf "$(ls pgaudit-*.orig.tar.gz | head -1)" -C pgaudit --strip-components=1)
fi

say "building PostgreSQL 15 with --enable-cassert --enable-debug (about three minutes)" >&2
(
    cd "$CACHE/src/postgresql"
    ./configure --prefix="$PREFIX" --enable-cassert --enable-debug --with-icu \
        --without-readline >"$CACHE/configure.log" 2>&1
    make -j2 >"$CACHE/make.log" 2>&1
    make install >"$CACHE/install.log" 2>&1
    # the contrib modules the tests and the benchmark use
    for module in pgcrypto pg_prewarm; do
        make -C "contrib/$module" install >>"$CACHE/install.log" 2>&1
    done
) || { tail -30 "$CACHE"/make.log >&2; exit 1; }
# never anything outside the prefix
case "$("$PREFIX/bin/pg_config" --pkglibdir)" in
    "$PREFIX"/*) ;;
    *) echo "the assert-enabled build's pkglibdir is outside $PREFIX" >&2; exit 1 ;;
esac

for ext in pgaudit; do
    dir=$CACHE/src/$ext
    say "building $ext against it" >&2
    make -C "$dir" USE_PGXS=1 PG_CONFIG="$PREFIX/bin/pg_config" clean >/dev/null 2>&1 || true
    make -C "$dir" USE_PGXS=1 PG_CONFIG="$PREFIX/bin/pg_config" install >"$CACHE/$ext.log" 2>&1 ||
        { tail -30 "$CACHE/$ext.log" >&2; exit 1; }
done
chmod -R a+rX "$PREFIX"
echo "$PREFIX"
