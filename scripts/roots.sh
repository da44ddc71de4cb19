# Debian roots: a Debian 13 root to build and test on PostgreSQL 17, and clean
# roots of Debian 12 and 13 to install the packages in. Source it after
# common.sh.
#
# A base root per suite is made once with `debootstrap --variant=minbase` and
# kept, never used, in .cache/roots; every root that is used starts as a copy
# of it. Only a root's own apt configuration is ever written; the machine's
# network settings (resolv.conf, CA bundle, apt's options) are copied in.

ROOTS=$REPO/.cache/roots

# in_private_mounts "$0" "$@": re-runs the calling script in a mount namespace
# of its own, so every mount it makes vanishes with it, however it ends, and
# none can reach the host's tree.
in_private_mounts() {
    if [ -z "${CASTLE_PRIVATE_MOUNTS:-}" ]; then
        CASTLE_PRIVATE_MOUNTS=1 exec unshare --mount --propagation private "$@"
    fi
}

# base_root SUITE: prints the path of the pristine root of bookworm or trixie.
base_root() {
    local suite=$1 dir=$ROOTS/$1-base
    if [ ! -f "$ROOTS/$suite-base.complete" ]; then
        say "debootstrap --variant=minbase $suite (about 30 seconds)" >&2
        mkdir -p "$ROOTS"
        rm -rf --one-file-system "$dir"
        debootstrap --variant=minbase "$suite" "$dir" "$(debian_mirror)" >"$ROOTS/$suite-debootstrap.log" 2>&1 ||
            { tail -20 "$ROOTS/$suite-debootstrap.log" >&2; return 1; }
        touch "$ROOTS/$suite-base.complete"
    fi
    echo "$dir"
}

# fresh_root SUITE DIR: DIR becomes a new copy of the suite's base root; its
# marker DIR.complete is written once the copy is whole.
fresh_root() {
    local base dir=$2
    base=$(base_root "$1")
    root_umount "$dir"
    rm -f "$dir.complete"
    rm -rf --one-file-system "$dir"
    mkdir -p "$(dirname "$dir")"
    cp -a "$base" "$dir"
    touch "$dir.complete"
}

# root_mount DIR [BIND...]: /proc, /dev, the machine's network settings, and
# each BIND folder at its own path inside.
root_mount() {
    local dir=$1; shift
    cp --remove-destination /etc/resolv.conf "$dir/etc/resolv.conf"
    cp --remove-destination /etc/hosts "$dir/etc/hosts"
    mkdir -p "$dir/etc/ssl/certs" "$dir/usr/local/share/ca-certificates"
    cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.host.crt"
    cp /etc/apt/apt.conf.d/99artifact-registry "$dir/etc/apt/apt.conf.d/" 2>/dev/null || true
    # packages never start services in a root: pg_ctlcluster does, when asked
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d" && chmod 755 "$dir/usr/sbin/policy-rc.d"
    mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
    if ! mountpoint -q "$dir/dev"; then
        mount --rbind /dev "$dir/dev"
        mount --make-rslave "$dir/dev"
    fi
    local path
    for path in "$@"; do
        mkdir -p "$dir$path"
        mountpoint -q "$dir$path" || mount --bind "$path" "$dir$path"
    done
}

# mounts_under DIR: the mount points below DIR, deepest first.
mounts_under() {
    local real
    real=$(realpath -e "$1") || return 0
    findmnt -rn -o TARGET | sed 's/\\x20/ /g' | awk -v d="$real/" 'index($0, d) == 1' | sort -r
}

# root_umount DIR: everything mounted under DIR, or fail saying what is left.
root_umount() {
    local dir=$1 m
    [ -d "$dir" ] || return 0
    while IFS= read -r m; do
        umount -l "$m" || true
    done < <(mounts_under "$dir")
    if [ -n "$(mounts_under "$dir")" ]; then
        echo "still mounted under $dir:" >&2
        mounts_under "$dir" >&2
        return 1
    fi
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
