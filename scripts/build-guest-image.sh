#!/bin/sh
# Builds what the qemu driver boots, from Debian packages and the project's
# own wheels, into build/guest/:
#   vmlinux     the Debian cloud kernel, uncompressed (microVMs boot it via PVH)
#   initrd.gz   busybox + the virtio modules + scripts/guest/init, which mounts
#               the root filesystem and runs the agent runtime there
#   rootfs.img  the root filesystem (ext4, attached read-only): Debian
#               bookworm's python3 (debootstrap, minbase), git and busybox, the
#               runtime's third-party packages at the versions installed in
#               .venv (scripts/guest/pins.py), and swarmcommon + swarmagent
#               built as wheels from this tree
#   image.stamp what all of it was built from (a hash): the qemu driver keys
#               its snapshots by it, and a rerun with the same inputs does nothing
# Each layer is cached under build/guest (the kernel; the Debian tree and its
# downloads; the third-party packages, keyed by their pins), so a change to
# the project's sources only rebuilds the wheels, the image and the initramfs
# (seconds). A cold build takes a few minutes. Installs qemu-system-x86,
# busybox-static, lz4 and debootstrap when missing (root).
set -eu
OUT=${1:-build/guest}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
MIRROR=${GUEST_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PACKAGES=python3,busybox-static,git
MODULES="failover net_failover virtio_ring virtio virtio_mmio virtio_net virtio_blk"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need qemu-system-x86_64 || ! need busybox || ! need unlz4 || ! need debootstrap; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        qemu-system-x86 busybox-static lz4 debootstrap >/dev/null
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# What the image is made of: this script, the guest's init and pins, the
# third-party versions, and the project's packages as they are in this tree.
"$PYTHON" "$REPO/scripts/guest/pins.py" > "$WORK/pins.txt"
SOURCES=$(cd "$REPO" && find scripts/build-guest-image.sh scripts/guest \
    libs/swarmcommon/pyproject.toml libs/swarmcommon/swarmcommon libs/swarmcommon/swarm \
    libs/swarmagent/pyproject.toml libs/swarmagent/swarmagent \
    -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum | sha256sum)
KEY=$(printf '%s\n%s\n%s %s %s %s\n' "$SOURCES" "$(cat "$WORK/pins.txt")" "$SUITE" "$PACKAGES" "$MIRROR" \
    "$MODULES" | sha256sum | cut -c1-32)
if [ "$(cat "$OUT/image.stamp" 2>/dev/null)" = "$KEY" ] \
    && [ -f "$OUT/vmlinux" ] && [ -f "$OUT/initrd.gz" ] && [ -f "$OUT/rootfs.img" ]; then
    exit 0
fi
rm -f "$OUT/image.stamp"

# -- the kernel and its modules -----------------------------------------------
if [ ! -f "$OUT/vmlinux" ] || [ ! -f "$OUT/modules/virtio_blk.ko" ]; then
    (cd "$WORK" && apt-get download -q linux-image-cloud-amd64 >/dev/null 2>&1 || true)
    # The metapackage names the real image package; fetch that one.
    META=$(ls "$WORK"/linux-image-cloud-amd64_*.deb 2>/dev/null | head -1)
    if [ -n "$META" ]; then
        REAL=$(dpkg-deb -f "$META" Depends | tr ',' '\n' | grep -o 'linux-image-[^ ]*' | head -1)
    else
        REAL=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
    fi
    (cd "$WORK" && apt-get download -q "$REAL" >/dev/null 2>&1)
    dpkg-deb -x "$WORK"/"$REAL"_*.deb "$WORK/kernel"
    # vmlinuz is a bzImage with an LZ4 payload: cut at the LZ4 magic and unpack.
    VMLINUZ=$(ls "$WORK"/kernel/boot/vmlinuz-*)
    OFFSET=$(grep -aboP '\x02\x21\x4c\x18' "$VMLINUZ" | head -1 | cut -d: -f1)
    tail -c +$((OFFSET + 1)) "$VMLINUZ" | unlz4 -c 2>/dev/null > "$WORK/vmlinux" || true
    file "$WORK/vmlinux" | grep -q ELF || { echo "could not extract vmlinux from $VMLINUZ" >&2; exit 1; }
    rm -rf "$OUT/modules" && mkdir -p "$OUT/modules"
    for m in $MODULES; do
        cp "$(find "$WORK/kernel/lib/modules" -name "$m.ko" | head -1)" "$OUT/modules/"
    done
    cp "$WORK/vmlinux" "$OUT/vmlinux.tmp" && mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
    echo "guest kernel: $REAL"
fi

# -- the Debian tree: python3, git, busybox -----------------------------------
TREE=$OUT/rootfs
BASE_KEY="$SUITE $PACKAGES $MIRROR"
if [ "$(cat "$OUT/rootfs.base" 2>/dev/null)" != "$BASE_KEY" ]; then
    rm -rf "$TREE" "$OUT/rootfs.deps"
    mkdir -p "$OUT/debs"
    echo "debootstrap $SUITE ($PACKAGES) into $TREE ..."
    debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$OUT/debs" \
        "$SUITE" "$TREE" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    # What a read-only agent VM never uses.
    rm -rf "$TREE"/var/cache/apt/* "$TREE"/var/lib/apt/lists/* "$TREE"/usr/share/doc \
        "$TREE"/usr/share/man "$TREE"/usr/share/info "$TREE"/usr/share/locale
    mkdir -p "$TREE/work"
    echo "$BASE_KEY" > "$OUT/rootfs.base"
fi

# -- third-party packages, at the versions the tests run ----------------------
SITE=$TREE/usr/local/lib/python3.11/dist-packages
DEPS_KEY=$(sha256sum < "$WORK/pins.txt" | cut -c1-32)
if [ "$(cat "$OUT/rootfs.deps" 2>/dev/null)" != "$DEPS_KEY" ]; then
    rm -rf "$SITE" && mkdir -p "$SITE"
    echo "installing $(wc -l < "$WORK/pins.txt") packages into the guest image ..."
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --target "$SITE" -r "$WORK/pins.txt" 2>&1 | grep -v "^WARNING: Location" || true
    [ -d "$SITE/grpc" ] || { echo "the guest's packages did not install" >&2; exit 1; }
    rm -rf "$SITE/bin"
    echo "$DEPS_KEY" > "$OUT/rootfs.deps"
fi

# -- the project's own wheels, from this tree ---------------------------------
# Built from a copy: setuptools leaves build/ directories next to its sources.
mkdir -p "$WORK/src" "$WORK/wheels"
cp -r "$REPO/libs/swarmcommon" "$REPO/libs/swarmagent" "$WORK/src/"
"$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
    -w "$WORK/wheels" "$WORK/src/swarmcommon" "$WORK/src/swarmagent" 2>&1 | grep -v "^WARNING: Location" || true
rm -rf "$TREE/opt/swarm" && mkdir -p "$TREE/opt/swarm"
"$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target "$TREE/opt/swarm" \
    "$WORK"/wheels/*.whl 2>&1 | grep -v "^WARNING: Location" || true
[ -f "$TREE/opt/swarm/swarmagent/vm.py" ] || { echo "the project's wheels did not install" >&2; exit 1; }
echo /opt/swarm > "$SITE/swarm.pth"

# -- the image: ext4, no journal (it is only ever mounted read-only) ----------
# Written next to the old one and renamed over it: running guests keep theirs.
SIZE_MB=$(( $(du -sm "$TREE" | cut -f1) * 12 / 10 + 32 ))
INODES=$(( $(find "$TREE" | wc -l) * 12 / 10 + 1024 ))
rm -f "$OUT/rootfs.img.tmp"
mkfs.ext4 -q -F -L swarm-root -O ^has_journal -m 0 -N "$INODES" -d "$TREE" "$OUT/rootfs.img.tmp" "${SIZE_MB}M" >/dev/null
mv "$OUT/rootfs.img.tmp" "$OUT/rootfs.img"

# -- the initramfs --------------------------------------------------------------
ROOT="$WORK/initrd"
mkdir -p "$ROOT/bin" "$ROOT/lib/modules" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/tmp"
cp "$(command -v busybox)" "$ROOT/bin/busybox"
cp "$OUT"/modules/*.ko "$ROOT/lib/modules/"
cp "$REPO/scripts/guest/init" "$ROOT/init"
chmod +x "$ROOT/init"
(cd "$ROOT" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -9) > "$OUT/initrd.gz.tmp"
mv "$OUT/initrd.gz.tmp" "$OUT/initrd.gz"

echo "$KEY" > "$OUT/image.stamp"
echo "guest image in $OUT ($(du -sm "$OUT/rootfs.img" | cut -f1) MB root filesystem)"
