#!/usr/bin/env bash
# scripts/private_debian_pg.sh: a copy of Debian 12's PostgreSQL 15 in the
# repo's .cache, which the debian15 target builds, tests and tours against.
# Installing writes into an installation: never into /usr/lib/postgresql,
# where a server of the machine's own may have castle_sessions loaded (a
# library overwritten in place crashes every server that has it mapped).
# PostgreSQL finds its files relative to its binaries, so the copy runs where
# it is. Redone when one of the Debian packages it is copied from changes.
# Prints the copy's bindir.
source "$(dirname "$0")/common.sh"

COPY=$REPO/.cache/pg15-debian
STAGE=$COPY/stage
packages=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron postgresql-15-pgaudit)
key=$(dpkg-query -W -f='${Package}=${Version}\n' "${packages[@]}")
if [ ! -f "$COPY/key" ] || [ "$(cat "$COPY/key")" != "$key" ]; then
    # a server running from an earlier copy keeps the files it has open
    rm -rf "$COPY"
    mkdir -p "$STAGE/usr/lib/postgresql" "$STAGE/usr/share/postgresql" "$STAGE/usr/include"
    cp -a /usr/lib/postgresql/15 "$STAGE/usr/lib/postgresql/"
    cp -a /usr/share/postgresql/15 "$STAGE/usr/share/postgresql/"
    cp -a /usr/include/postgresql "$STAGE/usr/include/"
    # the postgres user runs servers from it
    chmod 755 "$REPO/.cache" "$COPY"
    echo "$key" >"$COPY/key"
fi
echo "$STAGE/usr/lib/postgresql/15/bin"
