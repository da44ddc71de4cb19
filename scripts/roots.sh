# Debian roots: a Debian 13 root to build and test on PostgreSQL 17, and clean
# roots of Debian 12 and 13 to install the packages in. Source it after
# common.sh.
#
# A base root per suite is made once with `debootstrap --variant=minbase` and
# kept, never used, in .cache/roots; every root that is used starts as a copy
# of it. Only a root's own apt configuration is ever written; the machine's
# network settings (resolv.conf, CA bundle, apt's options) are copied in.

ROOTS=$REPO/.cache/roots

# base_root SUITE: prints the path of the pristine root of bookworm or trixie.
base_root() {
    local suite=$1 dir=$ROOTS/$1-base
    if [ ! -x "$dir/usr/bin/apt-get" ] || [ ! -f "$dir/.complete" ]; then
        say "debootstrap --variant=minbase $suite (about 30 seconds)" >&2
        rm -rf "$dir" && mkdir -p "$ROOTS"
        debootstrap --variant=minbase "$suite" "$dir" "$(debian_mirror)" >"$ROOTS/$suite-debootstrap.log" 2>&1 ||
            { tail -20 "$ROOTS/$suite-debootstrap.log" >&2; return 1; }
        touch "$dir/.complete"
    fi
    echo "$dir"
}

# fresh_root SUITE DIR: DIR becomes a new copy of the suite's base root.
fresh_root() {
    local base
    base=$(base_root "$1")
    root_umount "$2"
    rm -rf "$2" && mkdir -p "$(dirname "$2")"
    cp -a "$base" "$2"
}

# root_mount DIR [BIND...]: /proc, /dev, the machine's network settings, and
# each BIND folder at its own path inside.
root_mount() {
    local dir=$1; shift
    cp /etc/resolv.conf "$dir/etc/resolv.conf"
    cp /etc/hosts "$dir/etc/hosts"
    mkdir -p "$dir/etc/ssl/certs" "$dir/usr/local/share/ca-certificates"
    cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.host.crt"
    cp /etc/apt/apt.conf.d/99artifact-registry "$dir/etc/apt/apt.conf.d/" 2>/dev/null || true
    # packages never start services in a root: pg_ctlcluster does, when asked
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d" && chmod 755 "$dir/usr/sbin/policy-rc.d"
    mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
    if ! mountpoint -q "$dir/dev"; then
        mount --rbind /dev "$dir/dev" && mount --make-rslave "$dir/dev"
    fi
    local path
    for path in "$@"; do
        mkdir -p "$dir$path"
        mountpoint -q "$dir$path" || mount --bind "$path" "$dir$path"
    done
}

# root_umount DIR: everything root_mount mounted under DIR.
root_umount() {
    local dir=$1
    [ -d "$dir" ] || return 0
    local m
    for m in $(findmnt -rn -o TARGET | grep -F "$dir/" | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
}

# root_run DIR COMMAND: COMMAND in bash inside the root, as root, with a clean
# environment but for CASTLE_* and BENCH_* settings.
root_run() {
    local dir=$1; shift
    local envs=(HOME=/root TERM=dumb LANG=C.UTF-8 PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
                PIP_CERT=/etc/ssl/certs/ca-certificates.host.crt PIP_DISABLE_PIP_VERSION_CHECK=1
                PIP_DEFAULT_TIMEOUT=180 DEBIAN_FRONTEND=noninteractive)
    local v
    for v in $(compgen -e | grep -E '^(CASTLE|BENCH)_' || true); do envs+=("$v=${!v}"); done
    chroot "$dir" /usr/bin/env -i "${envs[@]}" /bin/bash -c "$*"
}
