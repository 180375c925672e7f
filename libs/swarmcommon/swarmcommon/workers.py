"""Several server processes behind one port, for services whose handlers are
CPU-bound under the GIL.

gRPC's Python server runs handlers on threads of one process, so a service
uses at most one core. `supervise` starts N copies of the service module,
each binding the same address with SO_REUSEPORT (the kernel spreads
connections across them), forwards SIGTERM/SIGINT, and stops the rest if one
dies so the orchestrator restarts the whole unit.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def supervise(
    module: str,
    workers: int,
    env_prefix: str,
    extra_env: Callable[[int], dict[str, str]] = lambda i: {},
    grace_seconds: float = 10.0,
) -> int:
    """Run `python -m module` `workers` times; returns the exit status."""
    stopping = threading.Event()
    children: list[subprocess.Popen[bytes]] = []
    for index in range(workers):
        env = {
            **os.environ,
            f"{env_prefix}WORKERS": "1",
            f"{env_prefix}WORKER_INDEX": str(index),
            f"{env_prefix}REUSE_PORT": "true",
            f"{env_prefix}MIGRATE_ON_START": "false",
            **extra_env(index),
        }
        children.append(subprocess.Popen([sys.executable, "-m", module], env=env))
    log.info("workers started", extra={"workers": workers, "pids": [c.pid for c in children]})

    def stop(signum: int, _frame: object) -> None:
        stopping.set()
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    status = 0
    while children:
        for child in list(children):
            try:
                code = child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            children.remove(child)
            if code != 0 and not stopping.is_set():
                log.error(
                    "worker exited unexpectedly; stopping the others", extra={"pid": child.pid, "code": code}
                )
                status = code or 1
                stop(signal.SIGTERM, None)
            elif code not in (0, -signal.SIGTERM, -signal.SIGINT):
                # Killed by the very signal we forwarded (it came before the
                # worker installed its handler): that is the stop we asked for.
                status = status or code
    return status
