"""The one interface every isolation driver implements, and the one safe way
to signal a guest's process.

A pid alone does not name a process for long: once the guest exits and is
reaped, the kernel hands its pid to the next process that starts, and a
vmhost restarted with only pids in its database would signal strangers. A
guest is therefore identified by its pid *and its start time* (field 22 of
/proc/<pid>/stat, recorded in the handle when it starts): a pid whose start
time differs is another process, never signalled, and counts as gone. Once
verified, the process is signalled through a pidfd, which keeps naming that
one process even if it exits and its pid is reused between the check and
the kill.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from swarm_vmhost.domain import DriverName, GuestHandle, GuestLimit, GuestSpec

log = logging.getLogger(__name__)

# SIGTERM first: the guest reports nothing more and flushes its spans.
STOP_GRACE_SECONDS = 3.0
KILL_WAIT_SECONDS = 10.0
# /proc/<pid>/stat states of a process that has exited (not yet reaped, or being reaped).
EXITED_STATES = frozenset({"Z", "X"})
# The start time recorded for a guest that was gone before it could be read.
EXITED = -1


__all__ = [
    "GuestDriver",
    "GuestHandle",
    "GuestSpec",
    "ReadiesAhead",
    "guest_alive",
    "guest_identity",
    "is_process",
    "process_start_time",
    "recycled",
    "stop_guest",
    "with_start_time",
]


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
        """Kill the guest and remove its devices. Idempotent. A handle whose
        pid is None has no process left to signal (or none vmhost may
        signal): remove its devices and groups only."""

    def alive(self, handle: GuestHandle) -> bool: ...

    def unenforced_limits(self) -> tuple[GuestLimit, ...]:
        """The limits this driver's guests run without on this host."""

    def reconcile(self, known_agent_ids: set[str]) -> list[str]:
        """Remove what guests not in `known_agent_ids` left behind; say what.
        Does nothing where the driver lacks the rights to look."""


@runtime_checkable
class ReadiesAhead(Protocol):
    """A driver that keeps guests ready before any spawn asks: each has its
    agent id and address already, so the spawn takes the id (VmHost.spawn)
    and `start` with it finds the guest running."""

    def take_ready(self) -> str | None:
        """The id of a ready guest, now set aside for one spawn; None when
        none is ready."""

    def give_back_ready(self, agent_id: str) -> None:
        """A guest set aside that its spawn did not start (it keeps its address)."""

    def discard_ready(self, agent_id: str) -> None:
        """A guest set aside whose spawn failed: removed, its address given back."""


# -- identity -----------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of process `pid`, or None when there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2 (the command name) may hold spaces and parentheses: count the
    # fields after its closing one. They start at field 3 (the state).
    rest = raw[raw.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[22 - 3])


def process_start_time(pid: int) -> int | None:
    """When process `pid` started, in clock ticks after boot (field 22 of
    /proc/<pid>/stat); None when no process has that pid. An exited process
    not yet reaped keeps its start time (and its pid)."""
    stat = _stat(pid)
    return stat[1] if stat is not None else None


def is_process(pid: int, start_time: int) -> bool:
    """Whether `pid` still names the process that started at `start_time`."""
    return process_start_time(pid) == start_time


def with_start_time(handle: GuestHandle) -> GuestHandle:
    """`handle` with its process's start time recorded, taken as soon as the
    pid is known (a driver's own record wins). A guest already gone (and
    reaped) gets one no process has: its pid is never signalled."""
    if not handle.pid or handle.pid_start_time is not None:
        return handle
    started = process_start_time(handle.pid)
    return dataclasses.replace(handle, pid_start_time=EXITED if started is None else started)


def recycled(handle: GuestHandle) -> bool:
    """Whether the handle's pid now names another process than its guest (the
    guest exited and the pid went to a newer process, or nothing has it).
    Handles recorded before start times were cannot tell: False."""
    if not handle.pid or handle.pid_start_time is None:
        return False
    return not is_process(handle.pid, handle.pid_start_time)


def guest_identity(handle: GuestHandle) -> GuestHandle:
    """`handle` as it may be stopped: without its pid when that pid is
    recycled, so the driver removes the guest's devices and signals nobody."""
    return dataclasses.replace(handle, pid=None) if recycled(handle) else handle


# -- alive and stop -----------------------------------------------------------------------------


def _gone(pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None:
        return proc.poll() is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def guest_alive(pid: int | None, proc: subprocess.Popen[bytes] | None, start_time: int | None = None) -> bool:
    """Whether a guest's process still runs: our child, or a pid from before a
    restart. With `start_time`, a pid now naming another process is gone."""
    if not pid:
        return False
    if proc is not None or start_time is None:
        return not _gone(pid, proc)
    stat = _stat(pid)
    return stat is not None and stat[1] == start_time and stat[0] not in EXITED_STATES


def stop_guest(
    pid: int | None,
    proc: subprocess.Popen[bytes] | None,
    grace: float = STOP_GRACE_SECONDS,
    start_time: int | None = None,
) -> None:
    """Stop a guest's process group: SIGTERM, then SIGKILL after `grace`.

    `proc` (our unreaped child) pins its pid. Without it, pass the start
    time recorded when the guest started: the pid is then signalled only
    while it still names that process, through a pidfd. A bare pid without
    either is signalled as it is (handles from before start times were
    recorded)."""
    if not pid:
        return
    if proc is None and start_time is not None:
        _stop_verified(pid, start_time, grace)
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_SECONDS)):
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


def _stop_verified(pid: int, start_time: int, grace: float) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        # Checked after the pidfd is open: the process it names is the one
        # the check saw, so the signals below reach ours or no one.
        if not is_process(pid, start_time):
            log.warning("not signalling a pid that names another process now", extra={"pid": pid})
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_SECONDS)):
            _signal_group(pidfd, pid, start_time, sig)
            if select.select([pidfd], [], [], wait)[0]:  # readable once it has exited
                return
    finally:
        os.close(pidfd)


def _signal_group(pidfd: int, pid: int, start_time: int, sig: signal.Signals) -> None:
    """The guest through its pidfd; the rest of its process group while the
    guest, whose pid is the group's id, is still ours (a pid cannot be reused
    while its process is unreaped). Processes that left the group are the
    cgroup's to kill (CgroupTree.kill)."""
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        return
    try:
        if os.getpgid(pid) == pid and is_process(pid, start_time):
            os.killpg(pid, sig)
    except ProcessLookupError:
        return
