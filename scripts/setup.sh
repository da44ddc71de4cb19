#!/usr/bin/env bash
# Installs everything the project needs, as root, for CASTLE_TARGET (see
# common.sh): on a fresh Debian 12 machine with only Rust present, or inside
# the Debian 13 root of scripts/trixie.sh for debian17. Idempotent: what is
# there already is kept.
source "$(dirname "$0")/common.sh"

common=(libclang-dev sudo pgbouncer python3 python3-venv build-essential pkg-config prometheus-postgres-exporter)
if [ "$CASTLE_TARGET" = debian17 ]; then
    packages=(postgresql-17 postgresql-server-dev-17 postgresql-17-cron postgresql-17-pgaudit postgresql-17-plproxy "${common[@]}" nodejs)
else
    # the host: Debian's 15, and what the assert-enabled builds, the Debian 13
    # root and the package tests need
    packages=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron postgresql-15-pgaudit postgresql-15-plproxy
              "${common[@]}" debootstrap)
    # node and npm, where the machine has none of its own
    command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
    # the client stacks of docs/recipes.md (tests/clients), from Debian
    packages+=(openjdk-17-jdk-headless libpostgresql-jdbc-java golang-go golang-github-lib-pq-dev
               golang-github-jackc-pgx-v4-dev ruby ruby-activerecord ruby-pg php8.2-cli php8.2-pgsql)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts its own cluster on 5432; we never use it, and it only costs memory.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
    pg_ctlcluster "$PG_MAJOR" main stop 2>/dev/null || true
fi

case "$CASTLE_TARGET" in
    cassert*|plain*) "$REPO/scripts/build_pg.sh" "$PG_MAJOR" "${CASTLE_TARGET%??}" >/dev/null ;;
    debian15) "$REPO/scripts/private_debian_pg.sh" >/dev/null ;;
esac

if ! cargo pgrx --version 2>/dev/null | grep -q '0\.18\.1'; then
    [ "$CASTLE_TARGET" != debian17 ] || { echo "cargo-pgrx 0.18.1 is installed on the host, not in the root" >&2; exit 1; }
    # A debug build without debug info: 3.2 minutes on 2 cores against 7.1
    # for a release one. What cargo-pgrx does itself (run cargo, read the
    # library's symbols, copy files) takes the same second or so either way,
    # and what it builds is the same to the byte (a package compared file for
    # file).
    say "installing cargo-pgrx 0.18.1 (a debug build, about 3 minutes on 2 cores)"
    CARGO_PROFILE_DEV_DEBUG=0 cargo install cargo-pgrx --version 0.18.1 --locked --debug
fi
if ! grep -qs "pg$PG_MAJOR = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    say "cargo pgrx init --pg$PG_MAJOR $PG_CONFIG"
    cargo pgrx init "--pg$PG_MAJOR" "$PG_CONFIG" >/dev/null
fi

# The client-side suites: psycopg 3 from PyPI in a venv of the repo's own.
if [ ! -x "$VENV/bin/pytest" ] || ! cmp -s "$REPO/tests/requirements.txt" "$VENV/requirements.txt"; then
    say "creating $(basename "$VENV") (psycopg 3, pytest)"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REPO/tests/requirements.txt"
    cp "$REPO/tests/requirements.txt" "$VENV/requirements.txt"
fi

# The Python client stacks of tests/clients (docs/recipes.md): SQLAlchemy,
# asyncpg, Django, from PyPI, on the host only (they run on one major).
clients_req="$REPO/tests/clients/requirements.txt"
if [ "$CASTLE_TARGET" != debian17 ] && ! cmp -s "$clients_req" "$VENV/clients-requirements.txt"; then
    say "installing the Python client stacks (tests/clients/requirements.txt)"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$clients_req"
    cp "$clients_req" "$VENV/clients-requirements.txt"
fi

# The Node example service (tests/integration/test_http_services.py):
# node-postgres from npm, installed on the host (pure JavaScript, so the
# Debian 13 root runs the same node_modules with its own nodejs).
node_dir="$REPO/examples/node_service"
if [ "$CASTLE_TARGET" != debian17 ] &&
    { [ ! -d "$node_dir/node_modules" ] || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules" ]; }; then
    say "npm ci (examples/node_service)"
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

# The Node.js client stacks of tests/clients (docs/recipes.md): Knex, Kysely,
# Drizzle and node-postgres from npm, on the host only.
recipes_node="$REPO/tests/clients/node"
if [ "$CASTLE_TARGET" != debian17 ] &&
    { [ ! -d "$recipes_node/node_modules" ] || [ "$recipes_node/package-lock.json" -nt "$recipes_node/node_modules" ]; }; then
    say "npm ci (tests/clients/node: Knex, Kysely, Drizzle)"
    (cd "$recipes_node" && npm ci --no-audit --no-fund --loglevel=error)
fi

# castle-sessions-adonis and the AdonisJS 6 example app (tests/clients): the
# package built and packed as npm would publish it, then installed into the
# app from that tarball, so that the app has one AdonisJS and one Lucid, its
# own. Rebuilt when any of their files changed (a hash of them is kept in the
# app's build).
adonis_pkg="$REPO/clients/adonis"
adonis_app="$REPO/examples/adonis_app"
if [ "$CASTLE_TARGET" != debian17 ]; then
    node_major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$node_major" -ge 20 ] || { echo "AdonisJS 6 needs Node.js 20 or later; this machine has $(node --version)" >&2; exit 1; }
    adonis_sources=$(cd "$REPO" && find clients/adonis examples/adonis_app \
        \( -name node_modules -o -name build \) -prune -o -type f ! -name '*.tgz' -print0 |
        sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$adonis_app/build/.sources" 2>/dev/null)" != "$adonis_sources" ]; then
        say "building clients/adonis and examples/adonis_app (npm ci, tsc)"
        (cd "$adonis_pkg" && rm -f castle-sessions-adonis-*.tgz && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build &&
            npm pack --silent --pack-destination "$adonis_pkg" >/dev/null)
        (cd "$adonis_app" && npm ci --no-audit --no-fund --loglevel=error &&
            npm install --no-save --no-audit --no-fund --loglevel=error "$adonis_pkg"/castle-sessions-adonis-*.tgz &&
            npm run --silent build)
        echo "$adonis_sources" > "$adonis_app/build/.sources"
    fi
fi
