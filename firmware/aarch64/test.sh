#!/usr/bin/env bash
# Build the package and run its test suite on aarch64 Linux, emulated on an x86 host (make test-aarch64).
#
# 1. An arm64 Debian bookworm root filesystem (debootstrap; cached in build/aarch64/rootfs) with the
#    board's Python 3.11, a compiler and the headers: what an OEM's board image or build container has.
# 2. qemu-user runs the arm64 binaries: the kernel hands them to qemu-aarch64-static through binfmt_misc
#    (registered here with the F flag, so it works inside the chroot).
# 3. Inside: a clean clone of this repository; the wheel an OEM builds, installed and self-checked; then
#    the suite exactly as `make test` runs it.
#
# Needs root (chroot, binfmt_misc) and the Debian packages debootstrap and qemu-user-static (installed here
# when missing). Slow: the first run builds the rootfs (~10 min); then ~45 min on a 2-core x86 host (the
# wheel and the editable install compile the Cython core under emulation; the suite ran 16 min, native 2.5).
# Usage: firmware/aarch64/test.sh [pytest args...]      (default: the whole suite, quiet)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work="$repo/build/aarch64"
rootfs="$work/rootfs"
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need debootstrap || ! need qemu-aarch64-static; then
    apt-get install -y --no-install-recommends debootstrap qemu-user-static
fi

# binfmt_misc: mount it if the host has not, then register qemu-aarch64 (F: the interpreter is opened now,
# so the chroot needs no copy of it)
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
fi

if [ ! -e "$rootfs/.complete" ]; then
    rm -rf "$rootfs"
    mkdir -p "$rootfs"
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-dev,python3-pip,gcc,g++,make,git,ca-certificates \
        "$suite" "$rootfs" "$mirror"
    touch "$rootfs/.complete"
fi

# the source, as CI sees it: a clean clone of the current commit (no build products of the host)
rm -rf "$rootfs/src"
git clone -q "$repo" "$rootfs/src"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
# trust what the host trusts (a company proxy's CA, for instance) for pip's downloads
host_ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[ -r "$host_ca" ] && cp "$host_ca" "$rootfs/etc/ssl/certs/host-ca-bundle.crt"

mounts=(proc sys dev dev/pts)
cleanup() { for m in "${mounts[@]}"; do umount -l "$rootfs/$m" 2>/dev/null || true; done; }
trap cleanup EXIT
mount -t proc proc "$rootfs/proc"
mount --rbind /sys "$rootfs/sys"
mount --rbind /dev "$rootfs/dev"
mount -t devpts devpts "$rootfs/dev/pts" 2>/dev/null || true

args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-q -p no:randomly)
# Inside: (1) the OEM's build: a wheel of the package (the Cython core compiled by the arm64 gcc), installed
# with its dependencies from their aarch64 wheels into a fresh venv, and the native core's self-check run
# from it; (2) the test suite exactly as `make test` runs it (editable install in .venv, then pytest).
chroot "$rootfs" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
        HYPOTHESIS_PROFILE=ci PIP_DISABLE_PIP_VERSION_CHECK=1 \
        SSL_CERT_FILE=/etc/ssl/certs/host-ca-bundle.crt PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt \
        /bin/bash -euc '
    cd /src
    echo "machine: $(uname -m), $(python3 --version)"
    python3 -m venv /build-venv
    /build-venv/bin/pip install -q --upgrade pip
    /build-venv/bin/pip wheel -q --no-deps -w /src/dist .
    ls -l /src/dist
    python3 -m venv /board
    /board/bin/pip install -q /src/dist/*.whl
    /board/bin/ems core --clusters 2
    make PYTHON=python3 install
    exec .venv/bin/python -m pytest "$@"
' bash "${args[@]}"
