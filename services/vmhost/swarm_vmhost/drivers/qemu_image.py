"""The qemu driver's guest image, the QEMU command line that runs it, and
its templates (the snapshots every guest is restored from).

The image (`make guest-image`, scripts/build-guest-image.sh) is the Debian
cloud kernel, a busybox initramfs and a root filesystem (ext4: Debian's
python3 and the agent runtime) attached read-only as a virtio-blk drive, so
one file serves every guest and a snapshot stays valid for as long as the
image is unchanged. A template is one boot of the image, saved with QEMU's
migration stream at the moment the guest program (`swarmagent.vm`) has
imported the runtime and the work function's module and waits for its
settings on the serial console. Templates live next to the image (every
vmhost on the host and every restart share them; vmhost's own state
directory where the image's is read-only), named by the image's stamp and
by everything that shapes the snapshot: QEMU's version, the machine, its
memory, the accelerator and the warmed module.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pyroute2 import IPRoute

from swarm_vmhost.drivers.base import stop_guest
from swarmcommon import vmconsole

QEMU = "qemu-system-x86_64"
MACHINE = "microvm,x-option-roms=off,isa-serial=on,pit=on,pic=on,rtc=on"
MEMORY_MB = 256
TAP_PREFIX = "sq"
# A template boot imports the runtime under TCG: 15 s for the guest program,
# 85 s with the LLM runtime (swarmagent.runtime) at load 8 on 2 cores. Two
# tries fit in a test's time limit (600 s).
BOOT_TIMEOUT = 280.0

# Unix socket paths are limited to about 100 bytes: consoles live here.
SOCKETS = Path(tempfile.gettempdir()) / "swarm-vmhost"


def socket_path(name: str) -> Path:
    SOCKETS.mkdir(mode=0o700, exist_ok=True)
    return SOCKETS / name


def remove_tap(tap: str) -> None:
    with IPRoute() as ip:
        for index in ip.link_lookup(ifname=tap):
            ip.link("del", index=index)


def host_tsc_khz() -> int | None:
    """The host CPU's clock in kHz, from /proc/cpuinfo (None when it says nothing)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "cpu MHz":
                return int(float(value) * 1000)
    except (OSError, ValueError):
        return None
    return None


def kernel_args(warm: str = "") -> str:
    """The guest kernel's command line.

    Under TCG the guest's TSC is the host's, and on a busy host the kernel
    cannot calibrate it against the emulated PIT: it marks the TSC unstable
    and the boot stalls in timer set-up (seen at load 8 on 2 cores). Telling
    it the TSC's rate (tsc_early_khz) and skipping the IO-APIC timer check
    (no_timer_check) makes the boot take seconds whatever the load.
    SWARM_WARM (unknown to the kernel, so it lands in init's environment)
    names the module the guest imports before the snapshot."""
    args = "console=ttyS0 tsc=reliable no_timer_check panic=-1 quiet"
    khz = host_tsc_khz()
    args = f"{args} tsc_early_khz={khz}" if khz else args
    return f"{args} SWARM_WARM={warm}" if warm else args


def connect(path: Path, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> socket.socket:
    """A connection to one of QEMU's unix sockets (the console, QMP)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"qemu exited ({proc.returncode})")
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def read_until(sock: socket.socket, markers: Sequence[bytes], timeout: float, buf: bytes = b"") -> bytes:
    """Console output until one of `markers` has arrived (and its line ended)."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + timeout
    while not any(m in buf and b"\n" in buf[buf.index(m) :] for m in markers):
        if time.monotonic() > deadline:
            names = " or ".join(m.decode() for m in markers)
            raise TimeoutError(f"no {names} on the console after {timeout:.0f}s")
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            raise ConnectionError(f"the guest's console closed: {buf[-300:].decode(errors='replace')}")
        buf += chunk
    return buf


class GuestImage:
    def __init__(self, image_dir: Path, state_dir: Path, accel: str = "tcg") -> None:
        self.image_dir = image_dir
        self.state_dir = state_dir
        self.accel = accel
        self._lock = threading.Lock()
        self._qemu_version = ""

    @property
    def kernel(self) -> Path:
        return self.image_dir / "vmlinux"

    @property
    def initrd(self) -> Path:
        return self.image_dir / "initrd.gz"

    @property
    def rootfs(self) -> Path:
        return self.image_dir / "rootfs.img"

    def built(self) -> bool:
        return self.kernel.exists() and self.initrd.exists() and self.rootfs.exists()

    def command(self, serial: Path, log: Path, netdev: str, warm: str, incoming: str | None) -> list[str]:
        """QEMU for one guest: its console on `serial` (everything it says also
        in `log`), its NIC on `netdev`; restored from `incoming` when given.
        Templates and their copies must agree on everything but those."""
        cmd = [
            QEMU,
            "-M",
            MACHINE,
            "-accel",
            self.accel,
            "-m",
            str(MEMORY_MB),
            "-kernel",
            str(self.kernel),
            "-initrd",
            str(self.initrd),
            "-append",
            kernel_args(warm),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            # The guest resets when its program ends: QEMU exits with it.
            "-no-reboot",
            # wait=on: QEMU starts the guest only once vmhost is connected,
            # so nothing the console says is lost.
            "-chardev",
            f"socket,id=console,path={serial},server=on,wait=on,logfile={log}",
            "-serial",
            "chardev:console",
            "-device",
            "virtio-net-device,netdev=n0,mac=52:54:00:00:00:01",
            "-netdev",
            netdev,
            "-drive",
            f"id=root,file={self.rootfs},format=raw,if=none,readonly=on",
            "-device",
            "virtio-blk-device,drive=root",
        ]
        return [*cmd, "-incoming", incoming] if incoming else cmd

    # -- templates --------------------------------------------------------------------------------

    def snapshot_dir(self) -> Path:
        """Next to the image where it is writable, else vmhost's own state."""
        shared = self.image_dir / "snapshots"
        if shared.is_dir() or os.access(self.image_dir, os.W_OK):
            shared.mkdir(exist_ok=True)
            return shared
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self.state_dir

    def _stamp(self) -> str:
        stamp = self.image_dir / "image.stamp"
        if stamp.exists():
            return stamp.read_text().strip()
        files = [(f.stat().st_size, f.stat().st_mtime_ns) for f in (self.kernel, self.initrd, self.rootfs)]
        return hashlib.sha256(repr(files).encode()).hexdigest()

    def _version(self) -> str:
        if not self._qemu_version:
            try:
                done = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=False)
                self._qemu_version = done.stdout.splitlines()[0] if done.stdout else "unknown"
            except OSError:
                self._qemu_version = "unknown"
        return self._qemu_version

    def template_path(self, warm: str = "") -> Path:
        """Where the template for this image (and warmed module) is kept."""
        stamp = self._stamp()
        shape = hashlib.sha256(
            "\n".join([stamp, self._version(), MACHINE, str(MEMORY_MB), self.accel, warm]).encode()
        ).hexdigest()
        return self.snapshot_dir() / f"{stamp[:16]}-{shape[:16]}.snap"

    def ensure_template(self, warm: str = "") -> Path:
        """Boot the image once and save it waiting for its settings (a second
        boot if the first one stalls, as TCG boots rarely do). A lock file
        makes concurrent vmhosts wait for one boot."""
        with self._lock:
            template = self.template_path(warm)
            if template.exists():
                return template
            with open(template.with_suffix(".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if template.exists():
                    return template
                try:
                    self._build_template(template, warm)
                except (TimeoutError, OSError, RuntimeError):
                    self._build_template(template, warm)
            image = template.name.split("-")[0]
            for old in template.parent.glob("*-*.*"):  # templates of an image that is gone
                if not old.name.startswith(image):
                    old.unlink(missing_ok=True)
            return template

    def _build_template(self, template: Path, warm: str) -> None:
        """One boot of the image into the snapshot file."""
        tag = f"template-{os.getpid()}-{threading.get_ident() % 10000}"
        serial, qmp = socket_path(f"{tag}.serial"), socket_path(f"{tag}.qmp")
        # A tap like the guests' (one on no bridge): a tap keeps no state
        # in the snapshot, so restored copies can use their own.
        tap = f"{TAP_PREFIX}template{os.getpid() % 1000:03d}"[:15]
        remove_tap(tap)
        with IPRoute() as ip:
            ip.link("add", ifname=tap, kind="tuntap", mode="tap")
        netdev = f"tap,id=n0,ifname={tap},script=no,downscript=no"
        log = template.with_suffix(".console.log")
        log.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [*self.command(serial, log, netdev, warm, None), "-qmp", f"unix:{qmp},server=on,wait=off"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        partial = template.with_suffix(".partial")
        try:
            console = connect(serial, proc)
            try:
                read_until(console, [vmconsole.READY.encode()], BOOT_TIMEOUT)
            except (TimeoutError, ConnectionError) as exc:
                raise RuntimeError(f"{exc} (the guest's console is in {log})") from exc
            _qmp(qmp, proc, "migrate", {"uri": f"exec:cat > {partial}"})
            deadline = time.monotonic() + 120
            while (status := _qmp(qmp, proc, "query-migrate", {}).get("status")) != "completed":
                if status == "failed" or time.monotonic() > deadline:
                    raise RuntimeError(f"template snapshot did not complete ({status})")
                time.sleep(0.05)
            partial.rename(template)
            console.close()
        finally:
            stop_guest(proc.pid, proc, grace=0.1)
            remove_tap(tap)
            partial.unlink(missing_ok=True)
            for path in (serial, qmp):
                path.unlink(missing_ok=True)


def _qmp(
    path: Path, proc: subprocess.Popen[bytes], command: str, arguments: dict[str, object]
) -> dict[str, object]:
    """One QMP command on a fresh connection (greeting, capabilities, command)."""
    sock = connect(path, proc)
    try:
        f = sock.makefile("rwb")
        json.loads(f.readline())
        for message in ({"execute": "qmp_capabilities"}, {"execute": command, "arguments": arguments}):
            f.write(json.dumps(message).encode() + b"\n")
            f.flush()
            while True:
                reply = json.loads(f.readline())
                if "return" in reply or "error" in reply:
                    break
        if "error" in reply:
            raise RuntimeError(f"qmp {command}: {reply['error']}")
        result = reply["return"]
        return result if isinstance(result, dict) else {}
    finally:
        sock.close()
