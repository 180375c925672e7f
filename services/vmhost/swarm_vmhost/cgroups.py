"""Resource limits for a guest: a cgroup per agent, v2 or v1 (whichever the
tree at `root` is), joined by the guest process itself before it execs, so
the limit holds from its first instruction (`ip netns exec` would remount /sys).

A limit counts as enforced only when its file exists in the agent's own
group and took the value: a controller the kernel does not offer there
(not enabled in the parent's subtree, not delegable, not mounted) leaves no
such file. `create` says which limits did not hold instead of carrying on
silently; the netns driver then refuses the guest, or — when the host is
set to allow it — runs it and reports those limits as unenforced.

`kill` stops everything in an agent's group however it got there: a guest
that calls setsid() or double-forks leaves its session and process group,
but not its cgroup (children are born in their parent's, and only root can
move them out). cgroup v2 has `cgroup.kill`; on v1 the group is frozen (the
freezer hierarchy, joined like the others), every member is killed, and it
is thawed so the signals land.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from swarm_vmhost.domain import ALL_LIMITS, GuestLimit
from swarmcommon.errors import FailedPrecondition, Unavailable

DEFAULT_ROOT = Path("/sys/fs/cgroup")
GROUP = "swarm"
CPU_PERIOD_US = 100_000
# cgroup v1 mounts one hierarchy per controller.
V1_CONTROLLERS = {GuestLimit.MEMORY: "memory", GuestLimit.CPU: "cpu", GuestLimit.PIDS: "pids"}
# Not a limit: what lets `kill` stop a v1 group's processes from forking while it kills them.
V1_FREEZER = "freezer"
KILL_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.02


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 1024 * 1024 * 1024
    cpus: float = 1.0
    pids: int = 512

    def v2_files(self) -> dict[GuestLimit, dict[str, str]]:
        return {
            GuestLimit.MEMORY: {"memory.max": str(self.memory_bytes)},
            GuestLimit.CPU: {"cpu.max": f"{int(self.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}"},
            GuestLimit.PIDS: {"pids.max": str(self.pids)},
        }

    def v1_files(self) -> dict[GuestLimit, dict[str, str]]:
        return {
            GuestLimit.MEMORY: {"memory.limit_in_bytes": str(self.memory_bytes)},
            GuestLimit.CPU: {
                "cpu.cfs_period_us": str(CPU_PERIOD_US),
                "cpu.cfs_quota_us": str(int(self.cpus * CPU_PERIOD_US)),
            },
            GuestLimit.PIDS: {"pids.max": str(self.pids)},
        }


def unenforced_message(missing: Sequence[GuestLimit], top: Path) -> str:
    names = ", ".join(missing)
    return (
        f"cgroup limits cannot be enforced for {names}: the {names} controller(s) cannot be enabled "
        f"for groups under {top}; set SWARM_VMHOST_ALLOW_UNLIMITED_GUESTS=true to run guests without them"
    )


@dataclass(frozen=True)
class Placement:
    """An agent's cgroup directories, and the limits that did not hold there."""

    dirs: list[Path] = field(default_factory=list)
    unenforced: tuple[GuestLimit, ...] = ()


def _write(directory: Path, files: dict[str, str]) -> bool:
    """Write every limit file; False when one is missing or refuses the value."""
    try:
        for name, value in files.items():
            if not (directory / name).is_file():
                return False
            (directory / name).write_text(value)
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class _Freezer:
    """A group's freezer: v1's freezer.state, or v2's cgroup.freeze."""

    control: Path
    freeze: str
    thaw: str
    state: Path  # where the frozen state is read
    frozen: str  # what it says once the whole group is frozen

    @staticmethod
    def of(d: Path) -> _Freezer | None:
        if (d / "freezer.state").is_file():
            return _Freezer(d / "freezer.state", "FROZEN", "THAWED", d / "freezer.state", "FROZEN")
        if (d / "cgroup.freeze").is_file():
            return _Freezer(d / "cgroup.freeze", "1", "0", d / "cgroup.events", "frozen 1")
        return None

    def is_frozen(self) -> bool:
        return self.frozen in self.state.read_text()


class CgroupTree:
    """The cgroup hierarchy guests' groups live in (`<root>/<group>/<agent id>`)."""

    def __init__(self, root: Path = DEFAULT_ROOT, group: str = GROUP) -> None:
        self.root = root
        self.group = group

    @property
    def top(self) -> Path:
        return self.root / self.group

    def version(self) -> int | None:
        if (self.root / "cgroup.controllers").exists():
            return 2
        if any((self.root / c).is_dir() for c in V1_CONTROLLERS.values()):
            return 1
        return None

    def _dirs(self, agent_id: str) -> list[Path]:
        if self.version() == 2:
            return [self.top / agent_id]
        return [self.root / c / self.group / agent_id for c in (*V1_CONTROLLERS.values(), V1_FREEZER)]

    def create(self, agent_id: str, limits: Limits) -> Placement:
        """The agent's group(s) with every limit the tree allows written."""
        v = self.version()
        if v == 2:
            return self._create_v2(agent_id, limits)
        if v == 1:
            return self._create_v1(agent_id, limits)
        return Placement([], ALL_LIMITS)

    def _create_v2(self, agent_id: str, limits: Limits) -> Placement:
        self.top.mkdir(exist_ok=True)
        for controller in V1_CONTROLLERS.values():
            # One at a time: a controller the parent does not offer fails
            # alone, and the files checked below say what holds.
            try:
                (self.top / "cgroup.subtree_control").write_text(f"+{controller}")
            except OSError:
                pass
        d = self.top / agent_id
        d.mkdir(exist_ok=True)
        unenforced = tuple(limit for limit, files in limits.v2_files().items() if not _write(d, files))
        return Placement([d], unenforced)

    def _create_v1(self, agent_id: str, limits: Limits) -> Placement:
        dirs, unenforced = [], []
        for limit, files in limits.v1_files().items():
            hierarchy = self.root / V1_CONTROLLERS[limit]
            if not hierarchy.is_dir():
                unenforced.append(limit)
                continue
            d = hierarchy / self.group / agent_id
            d.mkdir(parents=True, exist_ok=True)
            dirs.append(d)
            if not _write(d, files):
                unenforced.append(limit)
        if (self.root / V1_FREEZER).is_dir():
            d = self.root / V1_FREEZER / self.group / agent_id
            d.mkdir(parents=True, exist_ok=True)
            dirs.append(d)
        return Placement(dirs, tuple(unenforced))

    def place(self, agent_id: str, limits: Limits, allow_unlimited: bool) -> Placement:
        """The agent's group(s), refused (and nothing left behind) when a
        limit did not hold, unless the host allows unlimited guests."""
        try:
            placement = self.create(agent_id, limits)
        except OSError as exc:
            self.remove(agent_id)
            raise Unavailable(f"could not create the guest's cgroups: {exc}") from exc
        if placement.unenforced and not allow_unlimited:
            self.remove(agent_id)
            raise FailedPrecondition(
                unenforced_message(placement.unenforced, self.top),
                reason="GUEST_LIMITS_UNENFORCED",
                limits=",".join(placement.unenforced),
            )
        return placement

    def unenforceable(self, limits: Limits) -> tuple[GuestLimit, ...]:
        """The limits a guest's group would not get here (a trial group, removed again)."""
        trial = f".trial-{os.getpid()}"
        try:
            return self.create(trial, limits).unenforced
        except OSError:
            return ALL_LIMITS
        finally:
            self.remove(trial)

    @staticmethod
    def procs_file(d: Path) -> Path:
        """Where a process writes its pid to join group `d`."""
        return d / ("cgroup.procs" if (d / "cgroup.procs").exists() else "tasks")

    def remove(self, agent_id: str) -> None:
        for d in self._dirs(agent_id):
            if d.exists():
                try:
                    d.rmdir()  # succeeds once the group's processes are gone
                except OSError:
                    shutil.rmtree(d, ignore_errors=True)  # a plain directory standing in for one

    def known(self) -> set[str]:
        """Agent ids that have a group (for reconciling after a crash)."""
        found: set[str] = set()
        for d in {p.parent for p in self._dirs("x")}:
            if d.is_dir():
                found |= {c.name for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")}
        return found

    # -- kill -------------------------------------------------------------------------------------

    def members(self, agent_id: str) -> set[int]:
        """Every process in the agent's group(s)."""
        pids: set[int] = set()
        for d in self._dirs(agent_id):
            try:
                pids |= {int(p) for p in self.procs_file(d).read_text().split()}
            except OSError as exc:
                # A group removed meanwhile: gone (ENOENT), or its files
                # already detached from it (ENODEV).
                if exc.errno not in (errno.ENOENT, errno.ENODEV):
                    raise
        return pids

    def kill(self, agent_id: str, timeout: float = KILL_TIMEOUT_SECONDS) -> bool:
        """SIGKILL every process in the agent's group(s), those that left the
        guest's session or process group included; True once the groups are
        empty (False after `timeout`). Idempotent: no group, nothing to do."""
        dirs = [d for d in self._dirs(agent_id) if d.is_dir()]
        if not dirs:
            return True
        kill_file = dirs[0] / "cgroup.kill"
        deadline = time.monotonic() + timeout
        while self.members(agent_id):
            if time.monotonic() >= deadline:
                return False
            if kill_file.is_file():  # v2, kernel 5.14 and later
                kill_file.write_text("1")
            else:
                with self._frozen(dirs, deadline):
                    for pid in self.members(agent_id):
                        self._kill_member(pid, agent_id)
            time.sleep(POLL_SECONDS)
        return True

    @contextlib.contextmanager
    def _frozen(self, dirs: list[Path], deadline: float) -> Iterator[None]:
        """The group frozen (nothing in it runs, so nothing forks) while the
        block signals its members; thawed after, so the SIGKILLs land (a
        frozen v1 task does not die until thawed). Without a freezer the
        caller's loop catches what forked meanwhile."""
        freezer = next((f for f in map(_Freezer.of, dirs) if f is not None), None)
        if freezer is None:
            yield
            return
        freezer.control.write_text(freezer.freeze)
        try:
            while not freezer.is_frozen() and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
            yield
        finally:
            freezer.control.write_text(freezer.thaw)

    def _kill_member(self, pid: int, agent_id: str) -> None:
        """SIGKILL `pid` through a pidfd opened before checking it is still in
        the agent's group: a member that exited and whose pid went to another
        process is never signalled."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            if self._in_group(pid, agent_id):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            return
        finally:
            os.close(pidfd)

    def _in_group(self, pid: int, agent_id: str) -> bool:
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError):
            return False
        return any(line.endswith(f"/{self.group}/{agent_id}") for line in lines)
