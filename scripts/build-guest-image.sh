#!/bin/sh
# Builds what the qemu driver boots, from Debian packages, into build/guest/:
#   vmlinux     the Debian cloud kernel, uncompressed (microVMs boot it via PVH)
#   initrd.gz   busybox + the virtio modules + an init that waits for its
#               network settings on the serial console (they are only known
#               after a snapshot is restored), then answers on the bridge.
# Installs qemu-system-x86 and busybox-static when missing (root).
set -eu
OUT=${1:-build/guest}
if [ -f "$OUT/vmlinux" ] && [ -f "$OUT/initrd.gz" ]; then exit 0; fi

need() { command -v "$1" >/dev/null 2>&1; }
if ! need qemu-system-x86_64 || ! need busybox || ! need unlz4; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        qemu-system-x86 busybox-static lz4 >/dev/null
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
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

ROOT="$WORK/root"
mkdir -p "$ROOT/bin" "$ROOT/lib/modules" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/tmp"
cp "$(command -v busybox)" "$ROOT/bin/busybox"
for m in failover net_failover virtio_ring virtio virtio_mmio virtio_net; do
    cp "$(find "$WORK/kernel/lib/modules" -name "$m.ko" | head -1)" "$ROOT/lib/modules/"
done
cat > "$ROOT/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in failover net_failover virtio_ring virtio virtio_mmio virtio_net; do
    insmod /lib/modules/$m.ko
done
ip link set lo up
# Snapshot point: the host snapshots the guest while it waits here, and every
# restored copy reads its own settings: "swarm ip=A/N gw=G mac=M".
echo "SWARM-READY"
while read -r word ip gw mac rest < /dev/ttyS0; do
    [ "$word" = swarm ] && break
done
ip link set eth0 address "${mac#mac=}"
ip addr add "${ip#ip=}" dev eth0
ip link set eth0 up
ip route add default via "${gw#gw=}"
mkdir -p /www && echo "swarm guest ${ip#ip=}" > /www/index.html
httpd -p 8080 -h /www
echo "SWARM-UP ${ip#ip=}"
while true; do sleep 3600; done
INIT
chmod +x "$ROOT/init"
(cd "$ROOT" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -9) > "$OUT/initrd.gz"
cp "$WORK/vmlinux" "$OUT/vmlinux"
echo "guest image in $OUT ($REAL)"
