"""`qemu`: each guest is a QEMU microVM restored from a snapshot.

The guest image (`make guest-image`: the Debian cloud kernel's vmlinux and a
busybox initramfs) boots once per host into a template that waits, on its
serial console, for its network settings; that moment is saved with QEMU's
migration stream. Every spawn restores the template (TCG where KVM does not
work, as under nested paravirtualisation), attaches the guest's NIC to a tap
device on the bridge, and sends "swarm ip=... gw=... mac=..." to its console:
only then does the guest configure eth0 (its own MAC, so restored copies never
collide) and start answering on the bridge. Each guest has private RAM.

These guests are network sandboxes: the initramfs has no Python, so they do
not run the agent runtime or heartbeat; vmhost takes the QEMU process being
alive as their heartbeat.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from swarm_vmhost import network
from swarm_vmhost.domain import DriverName, GuestHandle, GuestLimit, GuestSpec
from swarm_vmhost.drivers.base import guest_alive, stop_guest
from swarmcommon.errors import FailedPrecondition, Unavailable

QEMU = "qemu-system-x86_64"
TAP_PREFIX = "sq"
BOOT_TIMEOUT = 60.0
RESTORE_TIMEOUT = 30.0
MEMORY_MB = 128


# Unix socket paths are limited to about 100 bytes: consoles live here.
SOCKETS = Path(tempfile.gettempdir()) / "swarm-vmhost"


def socket_path(name: str) -> Path:
    SOCKETS.mkdir(mode=0o700, exist_ok=True)
    return SOCKETS / name


def tap_name(agent_id: str) -> str:
    return f"{TAP_PREFIX}{network.short_id(agent_id)}"


def mac_of(agent_id: str) -> str:
    digest = hashlib.sha256(agent_id.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def _read_until(sock: socket.socket, marker: bytes, timeout: float) -> bytes:
    sock.settimeout(0.5)
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {marker.decode()} on the console after {timeout:.0f}s")
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            raise ConnectionError("the guest's console closed")
        buf += chunk
    return buf


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


def kernel_args() -> str:
    """The guest kernel's command line.

    Under TCG the guest's TSC is the host's, and on a busy host the kernel
    cannot calibrate it against the emulated PIT: it marks the TSC unstable
    and the boot stalls in timer set-up (seen at load 8 on 2 cores). Telling
    it the TSC's rate (tsc_early_khz) and skipping the IO-APIC timer check
    (no_timer_check) makes the boot take seconds whatever the load."""
    args = "console=ttyS0 tsc=reliable no_timer_check panic=-1 quiet"
    khz = host_tsc_khz()
    return f"{args} tsc_early_khz={khz}" if khz else args


def _connect(path: Path, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> socket.socket:
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


class QemuDriver:
    name = DriverName.QEMU
    isolated = True
    # The guest has no runtime to heartbeat with; a live QEMU process counts.
    guest_heartbeats = False

    def __init__(self, bridge: network.Bridge, image_dir: Path, state_dir: Path, accel: str = "tcg") -> None:
        self.bridge = bridge
        self.image_dir = image_dir
        self.state_dir = state_dir
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._template_lock = threading.Lock()
        self._accel = accel
        self._kernel_args = kernel_args()

    @property
    def kernel(self) -> Path:
        return self.image_dir / "vmlinux"

    @property
    def initrd(self) -> Path:
        return self.image_dir / "initrd.gz"

    @property
    def template(self) -> Path:
        return self.state_dir / "template.snap"

    def probe(self) -> str | None:
        if shutil.which(QEMU) is None:
            return f"{QEMU} is not installed; `make guest-image` installs it"
        if not (self.kernel.exists() and self.initrd.exists()):
            return f"no guest image in {self.image_dir}; build it with `make guest-image`"
        if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
            return "needs root and /dev/net/tun for tap devices on the bridge"
        if self._accel == "kvm" and not os.path.exists("/dev/kvm"):
            return "qemu_accel is kvm but /dev/kvm is missing"
        return None

    def unenforced_limits(self) -> tuple[GuestLimit, ...]:
        # The VM is its own limit: MEMORY_MB of RAM, one vCPU, and its
        # processes live inside it.
        return ()

    def accel(self) -> str:
        return self._accel

    def _command(self, serial: Path, netdev: str, incoming: str | None) -> list[str]:
        cmd = [
            QEMU,
            "-M",
            "microvm,x-option-roms=off,isa-serial=on,pit=on,pic=on,rtc=on",
            "-accel",
            self.accel(),
            "-m",
            str(MEMORY_MB),
            "-kernel",
            str(self.kernel),
            "-initrd",
            str(self.initrd),
            "-append",
            self._kernel_args,
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            # wait=on: QEMU starts the guest only once vmhost is connected,
            # so nothing the console says is lost.
            "-serial",
            f"unix:{serial},server=on,wait=on",
            "-device",
            "virtio-net-device,netdev=n0,mac=52:54:00:00:00:01",
            "-netdev",
            netdev,
        ]
        if incoming:
            cmd += ["-incoming", incoming]
        return cmd

    def ensure_template(self) -> Path:
        """Boot the image once and save it waiting for its settings (a
        second boot if the first one stalls, as TCG boots rarely do)."""
        with self._template_lock:
            if self.template.exists():
                return self.template
            try:
                return self._build_template()
            except (TimeoutError, OSError, RuntimeError):
                return self._build_template()

    def _build_template(self) -> Path:
        """One boot of the image into the snapshot file."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        work = self.state_dir / "template-build"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        serial, qmp = (
            socket_path(f"template-{os.getpid()}.serial"),
            socket_path(f"template-{os.getpid()}.qmp"),
        )
        # A tap like the guests' (one on no bridge): a tap keeps no state
        # in the snapshot, so restored copies can use their own.
        tap = f"{TAP_PREFIX}template{os.getpid() % 1000:03d}"[:15]
        self._remove_tap(tap)
        with IPRoute() as ip:
            ip.link("add", ifname=tap, kind="tuntap", mode="tap")
        netdev = f"tap,id=n0,ifname={tap},script=no,downscript=no"
        proc = subprocess.Popen(
            [*self._command(serial, netdev, None), "-qmp", f"unix:{qmp},server=on,wait=off"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            console = _connect(serial, proc)
            _read_until(console, b"SWARM-READY", BOOT_TIMEOUT)
            partial = self.template.with_suffix(".partial")
            _qmp(qmp, proc, "migrate", {"uri": f"exec:cat > {partial}"})
            deadline = time.monotonic() + 120
            while _qmp(qmp, proc, "query-migrate", {}).get("status") != "completed":
                if time.monotonic() > deadline:
                    raise TimeoutError("template snapshot did not complete")
                time.sleep(0.05)
            partial.rename(self.template)
            console.close()
        finally:
            stop_guest(proc.pid, proc, grace=0.1)
            self._remove_tap(tap)
            shutil.rmtree(work, ignore_errors=True)
            for path in (serial, qmp):
                path.unlink(missing_ok=True)
        return self.template

    def start(self, spec: GuestSpec) -> GuestHandle:
        why = self.probe()
        if why is not None:
            raise FailedPrecondition(f"qemu driver unavailable: {why}")
        try:
            template = self.ensure_template()
        except (TimeoutError, OSError, RuntimeError, NetlinkError) as exc:
            raise Unavailable(f"could not make the guest template: {exc}") from exc
        workdir = Path(spec.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        tap = tap_name(spec.agent_id)
        try:
            with IPRoute() as ip:
                ip.link("add", ifname=tap, kind="tuntap", mode="tap")
                index = ip.link_lookup(ifname=tap)[0]
                bridge_index = ip.link_lookup(ifname=self.bridge.name)[0]
                ip.link("set", index=index, master=bridge_index, state="up")
                ip.brport("set", index=index, isolated=1)
        except (NetlinkError, IndexError) as exc:
            self._remove_tap(tap)
            raise Unavailable(f"could not create the guest's tap device: {exc}") from exc
        serial = socket_path(f"{network.short_id(spec.agent_id)}.serial")
        log = open(workdir / "qemu.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            proc = subprocess.Popen(
                self._command(
                    serial, f"tap,id=n0,ifname={tap},script=no,downscript=no", f"exec:cat {template}"
                ),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        started = time.perf_counter()
        restored_ms = 0.0
        try:
            console = _connect(serial, proc)
            line = (
                f"swarm ip={spec.address}/{spec.prefix_len} gw={spec.gateway} mac={mac_of(spec.agent_id)}\n"
            )
            # Input sent while the snapshot still loads is lost: say the line
            # until the guest's terminal echoes it, which marks the restore done.
            deadline = time.monotonic() + RESTORE_TIMEOUT
            console.settimeout(0.02)
            buf = b""
            while b"SWARM-UP" not in buf:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise TimeoutError("the restored guest did not come up")
                if not buf:
                    console.sendall(line.encode())
                try:
                    chunk = console.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    raise ConnectionError("the guest's console closed")
                if not buf:
                    restored_ms = (time.perf_counter() - started) * 1000
                buf += chunk
            up_ms = (time.perf_counter() - started) * 1000
            console.close()
        except (OSError, RuntimeError) as exc:
            stop_guest(proc.pid, proc, grace=0.1)
            self._remove_tap(tap)
            raise Unavailable(f"could not restore the guest: {exc}") from exc
        self._children[spec.agent_id] = proc
        data = {
            "accel": self.accel(),
            "serial": str(serial),
            "restore_ms": f"{restored_ms:.1f}",  # until the restored guest runs
            "up_ms": f"{up_ms:.1f}",  # until it answers on the bridge
        }
        return GuestHandle(spec.agent_id, self.name, pid=proc.pid, devices=[tap], data=data)

    @staticmethod
    def _remove_tap(tap: str) -> None:
        with IPRoute() as ip:
            for index in ip.link_lookup(ifname=tap):
                ip.link("del", index=index)

    def stop(self, handle: GuestHandle) -> None:
        stop_guest(handle.pid, self._children.pop(handle.agent_id, None), grace=0.5)
        self._remove_tap(tap_name(handle.agent_id))
        socket_path(f"{network.short_id(handle.agent_id)}.serial").unlink(missing_ok=True)

    def alive(self, handle: GuestHandle) -> bool:
        return guest_alive(handle.pid, self._children.get(handle.agent_id))

    def reconcile(self, known_agent_ids: set[str]) -> list[str]:
        if network.probe() is not None:
            return []
        known = {network.short_id(a) for a in known_agent_ids}
        removed = []
        with IPRoute() as ip:
            bridge_index = next(iter(ip.link_lookup(ifname=self.bridge.name)), None)
            for link in ip.get_links():
                name = str(link.get_attr("IFLA_IFNAME") or "")
                short = name.removeprefix(TAP_PREFIX)
                if (
                    name.startswith(TAP_PREFIX)
                    and link.get_attr("IFLA_MASTER") == bridge_index
                    and short not in known
                ):
                    ip.link("del", index=link["index"])
                    removed.append(short)
        return removed


def _qmp(
    path: Path, proc: subprocess.Popen[bytes], command: str, arguments: dict[str, object]
) -> dict[str, object]:
    """One QMP command on a fresh connection (greeting, capabilities, command)."""
    import json

    sock = _connect(path, proc)
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
