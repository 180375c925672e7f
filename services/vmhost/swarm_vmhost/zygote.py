"""The warm interpreter guests are forked from (swarmagent.zygote), run by
vmhost as a child process: spawn-to-ready without starting Python and
importing the agent runtime each time."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from swarm_vmhost.drivers.base import stop_guest
from swarm_vmhost.guests import zygote_env

log = logging.getLogger(__name__)


class Zygote:
    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="swarm-zygote-")) / "sock"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "swarmagent.zygote", str(self.path)],
            # Not vmhost's environment: the guests forked from it keep this one.
            env=zygote_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._lock = threading.Lock()
        ready = self._proc.stdout.readline() if self._proc.stdout else b""
        if b"zygote ready" not in ready:
            self.close()
            raise RuntimeError("the guest zygote did not start")

    def spawn(
        self, netns: str | None, cgroup_procs: Sequence[str], env: Mapping[str, str], cwd: str, log_path: str
    ) -> int:
        """A guest forked from the zygote; its pid."""
        import socket

        request = {
            "netns": netns,
            "cgroup_procs": list(cgroup_procs),
            "env": dict(env),
            "cwd": cwd,
            "log": log_path,
        }
        with self._lock, socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(self.path))
            f = sock.makefile("rwb")
            f.write(json.dumps(request).encode() + b"\n")
            f.flush()
            answer = json.loads(f.readline())
        if "pid" not in answer:
            raise RuntimeError(f"zygote: {answer.get('error', 'no answer')}")
        return int(answer["pid"])

    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        stop_guest(self._proc.pid, self._proc, grace=0.5)
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:
            time.sleep(0)
