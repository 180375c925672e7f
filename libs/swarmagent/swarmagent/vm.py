"""The agent runtime as a microVM's program (`main`, run by the guest
image's init: scripts/guest/init).

The qemu driver boots the guest image once per host (and work module): its
initramfs mounts the read-only root filesystem (Debian's python3 and this
runtime) and runs `main`, which imports the guest program (this module's
own work functions with it) and the module the host names (SWARM_WARM),
says READY and waits on the serial console. vmhost snapshots the VM at that moment, so every guest it spawns
is restored already warm. A restored guest reads its settings on the
console (swarmcommon.vmconsole), applies them, and runs `swarmagent.guest`
like a guest of any other driver.

Every restored copy starts from the same memory, so before anything else
runs the guest mixes the host's fresh entropy into its kernel's random pool
and reseeds the kernel's generator (TLS keys, uuids), reseeds Python's
`random` (OpenTelemetry's trace and span ids), and sets its wall clock to
the host's (the snapshot's is stale).
"""

from __future__ import annotations

import fcntl
import importlib
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from opentelemetry import propagate, trace

from swarmagent.agent import close_work, load_work
from swarmagent.client import ClaimedTicket
from swarmagent.loop import Work
from swarmcommon.vmconsole import BAD, HELLO, LISTENING, READY, STOP, UP, BadSettings, VmSettings, decode

# Files the host may hand a guest live here (a tmpfs): nowhere else.
FILES_DIR = Path("/run/swarm")
WORK_DIR = "/work"
# The work function a restored guest really runs, and when it was restored
# ("<start ns> <end ns> <driver>", the host's clock): see RestoredWork.
REAL_WORK_ENV, RESTORE_ENV = "SWARM_VM_WORK", "SWARM_VM_RESTORE"
# Modules to import before the snapshot, comma-separated (the host puts
# SWARM_WARM=... on the kernel command line, which makes it init's environment).
WARM_ENV = "SWARM_WARM"
# linux/random.h
RNDADDENTROPY, RNDRESEEDCRNG = 0x40085203, 0x5207

log = logging.getLogger("swarmagent.vm")
tracer = trace.get_tracer("swarmagent.vm")


def read_settings(console: IO[str]) -> VmSettings:
    """Waits for the host's hello, answers it, and reads the settings."""
    for line in console:
        if line.strip() == HELLO:
            break
    else:
        raise BadSettings("the console closed before the host said hello")
    _echo_off(console)
    _say(LISTENING)
    return decode(console)


def _echo_off(console: IO[str]) -> None:
    """The console stops repeating what the host says (the settings hold the
    agent's token, and vmhost keeps a log of what the guest writes)."""
    if not console.isatty():
        return
    attrs = termios.tcgetattr(console.fileno())
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(console.fileno(), termios.TCSANOW, attrs)


def watch_for_stop(console: IO[str]) -> None:
    """When vmhost says STOP on the console, stop as on SIGTERM (the guest
    program's handler ends its loop and flushes its spans)."""

    def watch() -> None:
        for line in console:
            if line.strip() == STOP:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="console", daemon=True).start()


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def reseed(entropy: bytes) -> None:
    """Make this copy's randomness its own: credit the host's entropy to the
    kernel's pool, reseed the kernel's generator from it, and reseed Python's."""
    with open("/dev/urandom", "wb") as dev:
        info = struct.pack("ii", len(entropy) * 8, len(entropy)) + entropy
        fcntl.ioctl(dev.fileno(), RNDADDENTROPY, info)
        fcntl.ioctl(dev.fileno(), RNDRESEEDCRNG)
    random.seed(os.urandom(32))


def configure_network(settings: VmSettings) -> None:
    """eth0 with the guest's own MAC (restored copies never collide; the
    bridge filter admits only this one) and address."""
    for args in (
        ["link", "set", "eth0", "address", settings.mac],
        ["addr", "add", settings.address, "dev", "eth0"],
        ["link", "set", "eth0", "up"],
        ["route", "add", "default", "via", settings.gateway],
    ):
        done = subprocess.run(["busybox", "ip", *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BadSettings(f"ip {' '.join(args)}: {done.stderr.strip()}")


def write_files(files: Mapping[str, str], root: Path = FILES_DIR) -> None:
    for name, content in files.items():
        path = Path(name)
        if not path.is_absolute() or path.parent != root or path.name in ("", ".", ".."):
            raise BadSettings(f"the host may only write files in {root}, not {name}")
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_text(content)


def guest_environment(settings: VmSettings) -> dict[str, str]:
    """The settings' environment; a restored guest's work function is
    wrapped so that its first ticket's trace shows the restore."""
    env = dict(settings.env)
    if env.get("SWARM_AGENT_WORK") and settings.restore is not None:
        start, end = settings.restore
        env[REAL_WORK_ENV] = env["SWARM_AGENT_WORK"]
        env[RESTORE_ENV] = f"{start} {end} {settings.driver}"
        env["SWARM_AGENT_WORK"] = "swarmagent.vm:work"
    return env


def apply(settings: VmSettings) -> None:
    reseed(settings.entropy)
    time.clock_settime_ns(time.CLOCK_REALTIME, settings.time_ns)
    configure_network(settings)
    write_files(settings.files)
    os.environ.clear()
    os.environ.update(guest_environment(settings))
    os.makedirs(WORK_DIR, exist_ok=True)
    os.chdir(WORK_DIR)


class RestoredWork:
    """The work function of SWARM_VM_WORK, which adds a `vm.restore` span (the
    restore's times as the host measured them) to the trace of the first
    ticket this guest works: the ticket that waited for the VM. Reads its
    environment at the first ticket (this module is imported before the
    snapshot, long before the guest has one)."""

    def __init__(self) -> None:
        self._work: Work | None = None
        self._restore_reported = False

    def __call__(self, claimed: ClaimedTicket) -> dict[str, Any]:
        if self._work is None:
            self._work = load_work(os.environ[REAL_WORK_ENV])
        if not self._restore_reported:
            self._restore_reported = True
            self._report_restore(claimed)
        return self._work(claimed)

    @staticmethod
    def _report_restore(claimed: ClaimedTicket) -> None:
        restore = os.environ.get(RESTORE_ENV, "").split()
        if len(restore) != 3:
            return
        start, end, driver = restore
        attributes = {
            "swarm.tenant_id": os.environ.get("SWARM_TENANT_ID", ""),
            "swarm.agent_id": os.environ.get("SWARM_AGENT_ID", ""),
            "swarm.ticket_id": claimed.id,
            "vm.driver": driver,
        }
        ticket = propagate.extract({"traceparent": claimed.ticket.traceparent})
        span = tracer.start_span("vm.restore", ticket, start_time=int(start), attributes=attributes)
        span.end(end_time=int(end))

    def close(self) -> None:
        if self._work is not None:
            close_work(self._work)


work = RestoredWork()


def report(claimed: ClaimedTicket) -> dict[str, Any]:
    """A work function that reports where it ran: the kernel, whether the
    root filesystem is read-only, the guest's address, whether it holds a
    token and where its CA file is. For checking a VM driver end to end
    (SWARM_VMHOST_GUEST_WORK=swarmagent.vm:report)."""
    return {
        "kernel": os.uname().release,
        "root_read_only": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
        "address": os.environ.get("SWARM_AGENT_ADDRESS", ""),
        "ticket": claimed.id,
        "with_token": bool(os.environ.get("SWARM_AGENT_TOKEN")),
        "ca_file": os.environ.get("SWARM_AGENT_CA_FILE", ""),
    }


def warm(modules: str) -> None:
    """Import what restored guests will need (a module missing from the image
    is left for the guest to report when it loads its work)."""
    for name in filter(None, (m.strip() for m in modules.split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log.warning("cannot warm %s: %s", name, exc)


def main() -> int:
    """The VM's program: warm, wait for the settings, become the guest."""
    # Before the snapshot, so restored guests start warm: the guest program,
    # and the span exporter it sets up (swarmcommon.telemetry imports it late).
    import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # noqa: F401

    import swarmagent.guest

    warm(os.environ.get(WARM_ENV, ""))
    _say(READY)
    try:
        settings = read_settings(sys.stdin)
        apply(settings)
    except (BadSettings, OSError) as exc:
        _say(f"{BAD} {exc}")
        return 1
    _say(f"{UP} {settings.address}")
    watch_for_stop(sys.stdin)
    return swarmagent.guest.main()
