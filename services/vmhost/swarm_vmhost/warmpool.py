"""Hardened guests started ahead of demand, so a spawn costs no Python start.

Each warm sandbox is a whole bubblewrap sandbox (swarm_vmhost.sandbox) with
a network namespace of its own and nothing plugged in, running
`swarmagent.warm` with the runtime imported, in the pool's cgroup. A spawn
takes one: vmhost moves its processes into the agent's cgroup, names its
network namespace after the agent and plugs it into the bridge, renames its
directory to the agent's, and sends it its environment; the pool starts a
replacement in the background. A sandbox never taken holds no secret.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import select
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from swarm_vmhost import sandbox
from swarm_vmhost.drivers.base import stop_guest

log = logging.getLogger(__name__)

WARM_SECONDS = 60.0  # a sandbox not warm by then is given up
READY = b"warm"


@dataclass
class WarmSandbox:
    proc: subprocess.Popen[bytes]  # the outer bwrap, leader of its own session
    child_pid: int  # the sandbox's first process, in its namespaces
    home: Path  # the guest's work directory (renamed to the agent's when taken)
    log: Path  # its stdout and stderr (likewise)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def processes(self) -> list[int]:
        """The sandbox's processes, outer bwrap first (to move them to another cgroup)."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in task.read_text().split()]
        return found

    def assign(self, env: Mapping[str, str]) -> None:
        """Become the guest with `env`; the sandbox's stdin closes after it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(dict(env)).encode() + b"\n")
        self.proc.stdin.close()

    def discard(self) -> None:
        stop_guest(self.proc.pid, self.proc, grace=0.5)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self.home, ignore_errors=True)
        self.log.unlink(missing_ok=True)


def start_warm(
    command: Sequence[str],
    home: Path,
    log_path: Path,
    cgroup_procs: Sequence[str],
    hidden: Sequence[str],
    base_env: Mapping[str, str],
    ca_file: str = "",
) -> WarmSandbox:
    """One warm sandbox, ready (the runtime imported) when this returns."""
    sandbox.prepare_home(home)
    info_r, info_w = os.pipe()
    run = sandbox.launch(
        command, base_env, str(home), hidden=hidden, ca_file=ca_file, new_netns=True, info_fd=info_w
    )
    # Joins the pool's cgroup before exec'ing bubblewrap: limited from the start.
    joins = "".join(f"echo $$ > {shlex.quote(p)} && " for p in cgroup_procs)
    log_file = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
    try:
        proc = subprocess.Popen(
            ["sh", "-c", f'{joins}exec "$@"', "warm", *run.argv],
            env=dict(base_env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_file,
            pass_fds=run.fds,
            start_new_session=True,
        )
    except BaseException:
        os.close(info_r)
        raise
    finally:
        run.close()
        log_file.close()
    try:
        with os.fdopen(info_r, "rb") as info:
            child_pid = int(json.loads(info.read() or b"{}")["child-pid"])
        warm = WarmSandbox(proc, child_pid, home, log_path)
        _await_ready(warm)
    except BaseException:
        stop_guest(proc.pid, proc, grace=0.5)
        shutil.rmtree(home, ignore_errors=True)
        raise
    return warm


def _await_ready(warm: WarmSandbox) -> None:
    assert warm.proc.stdout is not None
    ready, _, _ = select.select([warm.proc.stdout], [], [], WARM_SECONDS)
    line = warm.proc.stdout.readline() if ready else b""
    if READY not in line:
        log_text = warm.log.read_text(errors="replace")[-400:]
        raise RuntimeError(f"the warm sandbox did not start: {log_text.strip() or 'no output'}")


class WarmPool:
    """Up to `size` warm sandboxes, refilled by a background thread."""

    def __init__(self, size: int, make: Callable[[str], WarmSandbox]) -> None:
        """`make(slot)` starts one warm sandbox named `slot`."""
        self.size = size
        self._make = make
        self._ready: queue.Queue[WarmSandbox] = queue.Queue()
        self._wanted = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="warm-pool", daemon=True)
        if size > 0:
            self._wanted.set()
            self._thread.start()

    def take(self) -> WarmSandbox | None:
        """A warm sandbox, or None when none is ready (the caller starts one cold)."""
        while True:
            try:
                warm = self._ready.get_nowait()
            except queue.Empty:
                return None
            finally:
                self._wanted.set()
            if warm.alive():
                return warm
            warm.discard()

    def wait_full(self, timeout: float) -> bool:
        """Whether the pool holds `size` warm sandboxes within `timeout` (benchmarks, tests)."""
        deadline = time.monotonic() + timeout
        while self._ready.qsize() < self.size and time.monotonic() < deadline:
            time.sleep(0.02)
        return self._ready.qsize() >= self.size

    def _fill(self) -> None:
        failures = 0
        while not self._closed.is_set():
            self._wanted.wait(timeout=1.0)
            if self._closed.is_set():
                return
            if self._ready.qsize() >= self.size:
                self._wanted.clear()
                continue
            try:
                self._ready.put(self._make(f"warm-{uuid.uuid4().hex[:12]}"))
                failures = 0
            except (OSError, RuntimeError, ValueError, KeyError) as exc:
                failures += 1
                log.warning("could not start a warm sandbox", extra={"error": str(exc)})
                self._closed.wait(min(30.0, 0.5 * 2**failures))

    def close(self) -> None:
        self._closed.set()
        self._wanted.set()
        if self._thread.is_alive():
            self._thread.join(timeout=WARM_SECONDS + 5)
        while True:
            try:
                self._ready.get_nowait().discard()
            except queue.Empty:
                return
