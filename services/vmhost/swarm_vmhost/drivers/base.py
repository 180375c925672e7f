"""The one interface every isolation driver implements."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Protocol

from swarm_vmhost.domain import DriverName, GuestHandle, GuestLimit, GuestSpec

# SIGTERM first: the guest reports nothing more and flushes its spans.
STOP_GRACE_SECONDS = 3.0


__all__ = ["GuestDriver", "GuestHandle", "GuestSpec", "guest_alive", "stop_guest"]


class GuestDriver(Protocol):
    name: DriverName
    # Whether guests get their own network namespace on the bridge.
    isolated: bool
    # Whether guests run the agent runtime and heartbeat; otherwise vmhost
    # takes a live guest process as its heartbeat.
    guest_heartbeats: bool

    def probe(self) -> str | None:
        """None when this driver can run here, else why not."""

    def start(self, spec: GuestSpec) -> GuestHandle:
        """Start the guest; on failure raise and leave nothing behind."""

    def stop(self, handle: GuestHandle) -> None:
        """Kill the guest and remove its devices. Idempotent."""

    def alive(self, handle: GuestHandle) -> bool: ...

    def unenforced_limits(self) -> tuple[GuestLimit, ...]:
        """The limits this driver's guests run without on this host."""

    def reconcile(self, known_agent_ids: set[str]) -> list[str]:
        """Remove what guests not in `known_agent_ids` left behind; say what.
        Does nothing where the driver lacks the rights to look."""


def _gone(pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None:
        return proc.poll() is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def guest_alive(pid: int | None, proc: subprocess.Popen[bytes] | None) -> bool:
    """Whether a guest's process still runs (our child, or a pid from before a restart)."""
    return bool(pid) and not _gone(pid or 0, proc)


def stop_guest(
    pid: int | None, proc: subprocess.Popen[bytes] | None, grace: float = STOP_GRACE_SECONDS
) -> None:
    """Stop a guest's process group: SIGTERM, then SIGKILL after `grace`."""
    if not pid:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)  # the guest and anything it started
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while not _gone(pid, proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _gone(pid, proc):
            break
    if proc is not None:
        proc.wait(timeout=10)
