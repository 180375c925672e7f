"""Resource limits for a guest: a cgroup per agent, v2 or v1 (whichever the
host mounts), joined by the guest process itself before it execs, so the
limit holds from its first instruction (`ip netns exec` would remount /sys)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
GROUP = "swarm"


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 1024 * 1024 * 1024
    cpus: float = 1.0
    pids: int = 512


def version() -> int | None:
    if (ROOT / "cgroup.controllers").exists():
        return 2
    if (ROOT / "memory").is_dir() and (ROOT / "pids").is_dir():
        return 1
    return None


def _dirs(agent_id: str) -> list[Path]:
    if version() == 2:
        return [ROOT / GROUP / agent_id]
    return [ROOT / c / GROUP / agent_id for c in ("memory", "cpu", "pids")]


def create(agent_id: str, limits: Limits) -> list[Path]:
    """The agent's cgroup directories with limits written; [] when the host has none."""
    v = version()
    if v is None:
        return []
    period = 100_000
    quota = int(limits.cpus * period)
    if v == 2:
        top = ROOT / GROUP
        top.mkdir(exist_ok=True)
        try:
            (top / "cgroup.subtree_control").write_text("+memory +pids +cpu")
        except OSError:
            pass  # controllers not delegable here: the group still isolates accounting
        d = ROOT / GROUP / agent_id
        d.mkdir(exist_ok=True)
        for name, value in (("memory.max", str(limits.memory_bytes)), ("pids.max", str(limits.pids))):
            if (d / name).exists():
                (d / name).write_text(value)
        if (d / "cpu.max").exists():
            (d / "cpu.max").write_text(f"{quota} {period}")
        return [d]
    memory, cpu, pids = _dirs(agent_id)
    for d in (memory, cpu, pids):
        d.mkdir(parents=True, exist_ok=True)
    (memory / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
    (cpu / "cpu.cfs_period_us").write_text(str(period))
    (cpu / "cpu.cfs_quota_us").write_text(str(quota))
    (pids / "pids.max").write_text(str(limits.pids))
    return [memory, cpu, pids]


def procs_file(d: Path) -> Path:
    """Where a process writes its pid to join group `d`."""
    return d / ("cgroup.procs" if (d / "cgroup.procs").exists() else "tasks")


def remove(agent_id: str) -> None:
    for d in _dirs(agent_id):
        if d.exists():
            try:
                d.rmdir()  # succeeds once the group's processes are gone
            except OSError:
                shutil.rmtree(d, ignore_errors=True)


def known() -> set[str]:
    """Agent ids that have a group (for reconciling after a crash)."""
    found: set[str] = set()
    for d in {p.parent for p in _dirs("x")}:
        if d.is_dir():
            found |= {c.name for c in d.iterdir() if c.is_dir()}
    return found
