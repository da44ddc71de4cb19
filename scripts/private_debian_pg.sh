#!/usr/bin/env bash
# scripts/private_debian_pg.sh: a copy of Debian 12's PostgreSQL 15 in the
# repo's .cache, which the debian15 target builds, tests and tours against.
# Installing writes into an installation: never into /usr/lib/postgresql,
# where a server of the machine's own may have castle_sessions loaded (a
# library overwritten in place crashes every server that has it mapped).
# PostgreSQL finds its files relative to its binaries, so the copy runs where
# it is. Redone, by rename, when one of the Debian packages it is copied from
# changes.
# Prints the copy's bindir.
source "$(dirname "$0")/common.sh"

COPY=$REPO/.cache/pg15-debian
STAGE=$COPY/stage
packages=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron postgresql-15-pgaudit postgresql-15-plproxy)
key=$(dpkg-query -W -f='${Package}=${Version}\n' "${packages[@]}")
if [ ! -f "$COPY/key" ] || [ "$(cat "$COPY/key")" != "$key" ]; then
    # made beside it and renamed into place: a server running from the
    # earlier copy finds a whole installation at its paths at every moment
    # (the new one, with castle_sessions installed again by the caller)
    mkdir -p "$REPO/.cache"
    new=$(mktemp -d "$REPO/.cache/pg15-debian.new.XXXXXX")
    mkdir -p "$new/stage/usr/lib/postgresql" "$new/stage/usr/share/postgresql" "$new/stage/usr/include"
    cp -a /usr/lib/postgresql/15 "$new/stage/usr/lib/postgresql/"
    cp -a /usr/share/postgresql/15 "$new/stage/usr/share/postgresql/"
    cp -a /usr/include/postgresql "$new/stage/usr/include/"
    # carry an installed castle_sessions over, so the running server keeps it
    for file in "$STAGE"/usr/lib/postgresql/15/lib/castle_sessions.so \
                "$STAGE"/usr/share/postgresql/15/extension/castle_sessions*; do
        [ -e "$file" ] && cp -a "$file" "$new/${file#"$COPY/"}"
    done
    echo "$key" >"$new/key"
    # the postgres user runs servers from it
    chmod 755 "$REPO/.cache" "$new"
    old=$COPY.old.$$
    [ -d "$COPY" ] && mv "$COPY" "$old"
    mv "$new" "$COPY"
    rm -rf "$old"
fi
echo "$STAGE/usr/lib/postgresql/15/bin"
