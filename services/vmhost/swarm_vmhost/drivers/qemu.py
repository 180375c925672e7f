"""`qemu`: each guest is a QEMU microVM restored from a snapshot, running the
agent runtime.

Every spawn restores the template of the guest image (qemu_image: built
once per image and work module, TCG where KVM does not work, as under
nested paravirtualisation), attaches the guest's NIC to a tap device on the
bridge, and tells the guest on its console (swarmcommon.vmconsole) its
address and MAC (restored copies never collide), the host's clock, fresh
entropy, and the agent's environment as guests.guest_env made it, turned
into the VM's terms: the CA certificate's contents written inside the VM
where SWARM_AGENT_CA_FILE now points, no host paths. The guest then runs
`swarmagent.guest`: it heartbeats vmhost across the bridge and works
tickets, and the first ticket it works gets a `vm.restore` span with the
restore's times as measured here. Each guest has private RAM; what it
writes lives in its memory (tmpfs); its console output is kept in its work
directory (console.log; the settings are never echoed).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from swarm_vmhost import firewall, network
from swarm_vmhost.credentials import CA_FILE_ENV
from swarm_vmhost.domain import DriverName, GuestHandle, GuestLimit, GuestSpec
from swarm_vmhost.drivers.base import STOP_GRACE_SECONDS, guest_alive, stop_guest
from swarm_vmhost.drivers.qemu_image import (
    QEMU,
    TAP_PREFIX,
    GuestImage,
    connect,
    read_until,
    remove_tap,
    socket_path,
)
from swarmcommon import vmconsole
from swarmcommon.errors import FailedPrecondition, Unavailable

# Every tap's own (host-side) MAC. A bridge whose MAC nobody set takes its
# lowest port's, and changes it when that port goes: the remaining guests'
# gateway entry goes stale and they lose the host for tens of seconds (missed
# heartbeats). One high MAC for every tap is never the lowest but when only
# taps are on the bridge, and then the minimum never changes.
TAP_MAC = "fe:ff:ff:ff:ff:fe"
RESTORE_TIMEOUT = 60.0
HELLO_EVERY = 0.05
# Where the guest finds what the host hands it (a tmpfs in the VM).
GUEST_CA_FILE = "/run/swarm/ca.crt"
GUEST_PATH = "/usr/local/bin:/usr/bin:/bin"
# The host's interpreter, packages and home mean nothing inside the VM.
HOST_ONLY_ENV = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "HOME", "LANG")
STANDARD_GUEST = ("-m", "swarmagent.guest")
# Imported by the guest's own program: warm in every template.
GUEST_PROGRAM_MODULES = frozenset({"swarmagent.vm", "swarmagent.guest", "swarmagent.agent"})
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def tap_name(agent_id: str) -> str:
    return f"{TAP_PREFIX}{network.short_id(agent_id)}"


def work_module(env: Mapping[str, str]) -> str:
    """The module of the guest's work function, to warm in its template; ""
    for an idle guest, a module the guest program imports anyway, or a name
    that cannot be a module."""
    module = env.get("SWARM_AGENT_WORK", "").partition(":")[0]
    return module if MODULE_NAME.match(module) and module not in GUEST_PROGRAM_MODULES else ""


def vm_environment(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The guest's environment and files as the VM sees them: host-only
    variables dropped, the CA file's contents handed over and the variable
    pointed at where the guest writes them."""
    out = {k: v for k, v in env.items() if k not in HOST_ONLY_ENV}
    out["PATH"] = GUEST_PATH
    files = {}
    if out.get(CA_FILE_ENV):
        try:
            files[GUEST_CA_FILE] = Path(out[CA_FILE_ENV]).read_text()
        except OSError as exc:
            raise Unavailable(f"cannot read the guests' CA file: {exc}") from exc
        out[CA_FILE_ENV] = GUEST_CA_FILE
    return out, files


def _line_after(buf: bytes, marker: bytes) -> str:
    start = buf.index(marker) + len(marker)
    return buf[start : buf.index(b"\n", start)].decode(errors="replace").strip()


class QemuDriver:
    name = DriverName.QEMU
    isolated = True
    guest_heartbeats = True  # the guest runs the agent runtime

    def __init__(self, bridge: network.Bridge, image_dir: Path, state_dir: Path, accel: str = "tcg") -> None:
        self.bridge = bridge
        self.image = GuestImage(image_dir, state_dir, accel)
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def probe(self) -> str | None:
        if shutil.which(QEMU) is None:
            return f"{QEMU} is not installed; `make guest-image` installs it"
        if not self.image.built():
            return f"no guest image in {self.image.image_dir}; build it with `make guest-image`"
        if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
            return "needs root and /dev/net/tun for tap devices on the bridge"
        if self.accel() == "kvm" and not os.path.exists("/dev/kvm"):
            return "qemu_accel is kvm but /dev/kvm is missing"
        return None

    def unenforced_limits(self) -> tuple[GuestLimit, ...]:
        # The VM is its own limit: MEMORY_MB of RAM, one vCPU, and its
        # processes live inside it.
        return ()

    def accel(self) -> str:
        return self.image.accel

    def ensure_template(self, warm: str = "") -> Path:
        """The image's template warming `warm` (made once per image: minutes under TCG)."""
        return self.image.ensure_template(warm)

    # -- guests -----------------------------------------------------------------------------------

    def start(self, spec: GuestSpec) -> GuestHandle:
        why = self.probe()
        if why is not None:
            raise FailedPrecondition(f"qemu driver unavailable: {why}", reason="DRIVER_UNAVAILABLE")
        if tuple(spec.command[-2:]) != STANDARD_GUEST:
            raise FailedPrecondition(
                "qemu guests run the image's agent runtime (python -m swarmagent.guest), "
                f"not {' '.join(spec.command)!r}",
                reason="GUEST_COMMAND_UNSUPPORTED",
            )
        env, files = vm_environment(spec.env)
        warm = work_module(spec.env)
        try:
            template = self.image.ensure_template(warm)
        except (TimeoutError, OSError, RuntimeError, NetlinkError) as exc:
            raise Unavailable(f"could not make the guest template: {exc}") from exc
        workdir = Path(spec.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        tap = self._plug(spec)
        serial = socket_path(f"{network.short_id(spec.agent_id)}.serial")
        restore_start_ns, started = time.time_ns(), time.perf_counter()
        try:
            with open(workdir / "qemu.log", "ab") as log:
                proc = subprocess.Popen(
                    self.image.command(
                        serial,
                        workdir / "console.log",
                        f"tap,id=n0,ifname={tap},script=no,downscript=no",
                        warm,
                        f"exec:cat {template}",
                    ),
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
        except OSError as exc:
            self._unplug(spec.agent_id)
            raise Unavailable(f"could not start qemu: {exc}") from exc
        try:
            console = connect(serial, proc)
            try:
                restored_ns, restored_ms, buf = self._restore(console, proc, started)
                settings = vmconsole.VmSettings(
                    address=f"{spec.address}/{spec.prefix_len}",
                    gateway=spec.gateway,
                    mac=network.guest_mac(spec.agent_id),
                    time_ns=time.time_ns(),
                    entropy=os.urandom(32),
                    env=env,
                    files=files,
                    restore=(restore_start_ns, restored_ns),
                    driver=str(self.name),
                )
                self._configure(console, settings, buf)
                up_ms = (time.perf_counter() - started) * 1000
            finally:
                console.close()
        except (OSError, RuntimeError) as exc:
            stop_guest(proc.pid, proc, grace=0.1)
            self._unplug(spec.agent_id)
            raise Unavailable(
                f"could not restore the guest (its console: {workdir / 'console.log'}): {exc}"
            ) from exc
        self._children[spec.agent_id] = proc
        data = {
            "accel": self.accel(),
            "serial": str(serial),
            "template": template.name,
            "restore_ms": f"{restored_ms:.1f}",  # until the restored guest runs
            "up_ms": f"{up_ms:.1f}",  # until it has its settings and its network
        }
        return GuestHandle(spec.agent_id, self.name, pid=proc.pid, devices=[tap], data=data)

    def _plug(self, spec: GuestSpec) -> str:
        """The guest's tap on the bridge, its port pinned to the guest's MAC and
        address before it exists (swarm_vmhost.firewall): no frame of the
        guest's passes unfiltered, not even with the template's MAC."""
        tap = tap_name(spec.agent_id)
        try:
            firewall.pin(self.bridge, spec.agent_id, network.guest_mac(spec.agent_id), spec.address, tap)
            with IPRoute() as ip:
                ip.link("add", ifname=tap, kind="tuntap", mode="tap")
                index = ip.link_lookup(ifname=tap)[0]
                bridge_index = ip.link_lookup(ifname=self.bridge.name)[0]
                ip.link("set", index=index, address=TAP_MAC, master=bridge_index, state="up")
                ip.brport("set", index=index, isolated=1)
        except (NetlinkError, IndexError, firewall.FirewallError) as exc:
            self._unplug(spec.agent_id)
            raise Unavailable(f"could not put the guest's tap device on the bridge: {exc}") from exc
        return tap

    def _unplug(self, agent_id: str) -> None:
        """The tap first, then its pin (a port without one is unfiltered)."""
        remove_tap(tap_name(agent_id))
        firewall.unpin(self.bridge, agent_id)

    @staticmethod
    def _restore(
        console: socket.socket, proc: subprocess.Popen[bytes], started: float
    ) -> tuple[int, float, bytes]:
        """Say hello until the restored guest listens. Input sent while the
        snapshot still loads is lost, so the first thing the guest's terminal
        says (the echo of a hello) marks the restore done: when (host clock,
        ns), ms after `started`, and what the console said from LISTENING on."""
        console.settimeout(0.02)
        deadline, said = time.monotonic() + RESTORE_TIMEOUT, 0.0
        buf, restored_ns, restored_ms = b"", 0, 0.0
        listening = vmconsole.LISTENING.encode()
        while listening not in buf:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise TimeoutError("the restored guest did not answer")
            if time.monotonic() - said > HELLO_EVERY:
                console.sendall(f"{vmconsole.HELLO}\n".encode())
                said = time.monotonic()
            try:
                chunk = console.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionError("the guest's console closed")
            if not buf:
                restored_ns, restored_ms = time.time_ns(), (time.perf_counter() - started) * 1000
            buf += chunk
        return restored_ns, restored_ms, buf[buf.index(listening) :]

    @staticmethod
    def _configure(console: socket.socket, settings: vmconsole.VmSettings, buf: bytes) -> None:
        """Send the settings and wait until the guest has applied them."""
        console.sendall("".join(f"{line}\n" for line in vmconsole.encode(settings)).encode())
        up, bad = vmconsole.UP.encode(), vmconsole.BAD.encode()
        buf = read_until(console, [up, bad], RESTORE_TIMEOUT, buf)
        if bad in buf:
            raise RuntimeError(f"the guest refused its settings: {_line_after(buf, bad)}")

    def stop(self, handle: GuestHandle) -> None:
        """Ask the guest to stop (it flushes its spans, then the VM resets and
        QEMU exits), then stop QEMU as any guest's process: SIGTERM, SIGKILL."""
        if self.alive(handle):
            self._say_stop(handle)
        proc = self._children.pop(handle.agent_id, None)
        stop_guest(handle.pid, proc, grace=0.5, start_time=handle.pid_start_time)
        self._unplug(handle.agent_id)
        socket_path(f"{network.short_id(handle.agent_id)}.serial").unlink(missing_ok=True)

    def _say_stop(self, handle: GuestHandle, grace: float = STOP_GRACE_SECONDS) -> None:
        serial = Path(handle.data.get("serial", ""))
        try:
            with socket.socket(socket.AF_UNIX) as console:
                console.settimeout(1)
                console.connect(str(serial))
                console.sendall(f"{vmconsole.STOP}\n".encode())
        except OSError:
            return  # no console to say it on: signals only
        deadline = time.monotonic() + grace
        while self.alive(handle) and time.monotonic() < deadline:
            time.sleep(0.05)

    def alive(self, handle: GuestHandle) -> bool:
        return guest_alive(handle.pid, self._children.get(handle.agent_id), handle.pid_start_time)

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
