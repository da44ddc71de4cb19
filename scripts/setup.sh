#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine, as root,
# with only Rust present. Idempotent: what is there already is kept.
source "$(dirname "$0")/common.sh"

packages=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron postgresql-15-pgaudit libclang-dev
          sudo pgbouncer python3 python3-venv build-essential pkg-config)
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
    pg_ctlcluster 15 main stop 2>/dev/null || true
fi

if ! cargo pgrx --version 2>/dev/null | grep -q '0\.18\.1'; then
    say "installing cargo-pgrx 0.18.1 (about 7 minutes on 2 cores)"
    cargo install cargo-pgrx --version 0.18.1 --locked
fi
if ! grep -qs "pg15 = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    say "cargo pgrx init --pg15 $PG_CONFIG"
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

# The client-side suites: psycopg 3 from PyPI in a venv of the repo's own.
if [ ! -x "$REPO/.venv/bin/pytest" ] || ! cmp -s "$REPO/tests/requirements.txt" "$REPO/.venv/requirements.txt"; then
    say "creating .venv (psycopg 3, pytest)"
    rm -rf "$REPO/.venv"
    /usr/bin/python3 -m venv "$REPO/.venv"
    "$REPO/.venv/bin/pip" install -q --disable-pip-version-check -r "$REPO/tests/requirements.txt"
    cp "$REPO/tests/requirements.txt" "$REPO/.venv/requirements.txt"
fi

# The Node example service (tests/integration/test_http_services.py): node-postgres from npm.
command -v node >/dev/null && command -v npm >/dev/null || {
    say "installing Debian's nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
}
node_dir="$REPO/examples/node_service"
if [ ! -d "$node_dir/node_modules" ] || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules" ]; then
    say "npm ci (examples/node_service)"
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
