"""python -m swarmagent.zygote SOCKET: a warm interpreter for guests.

Starting Python and importing the agent runtime (gRPC, OpenTelemetry, the
anthropic SDK) is most of a sandbox's spawn-to-ready time. The zygote does it
once: it imports everything a guest needs, then waits on a unix socket. For
each request it forks; the child joins the guest's cgroups, enters its
network namespace, takes its environment, working directory and log, and
runs the guest program (`swarmagent.guest`) already imported. The zygote
itself starts no threads and opens no connections, so forking it is safe.

A request is one JSON line: {"netns": path, "cgroup_procs": [paths],
"env": {...}, "cwd": path, "log": path}; the answer is {"pid": n} or
{"error": "..."}.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
from typing import Any

# Everything a guest imports, imported once here.
import swarmagent.guest
import swarmagent.runtime  # noqa: F401 - warm for SWARM_AGENT_WORK=swarmagent.runtime:work

CLONE_NEWNET = 0x40000000


def _enter(request: dict[str, Any]) -> None:
    """In the child: become the guest (never returns)."""
    code = 1
    try:
        os.setsid()
        for procs in request.get("cgroup_procs", []):
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        if request.get("netns"):
            fd = os.open(request["netns"], os.O_RDONLY)
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed")
            os.close(fd)
        os.chdir(request["cwd"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        code = swarmagent.guest.main()
    except BaseException as exc:  # noqa: BLE001 - the guest's last words go to its log
        sys.stderr.write(f"guest failed: {exc!r}\n")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


PR_SET_PDEATHSIG = 1


def serve(path: str) -> None:
    # Gone with vmhost (a new vmhost starts its own); guests live on and are
    # adopted or reconciled by the new vmhost like any other.
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps exited guests
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(16)
    sys.stdout.write("zygote ready\n")
    sys.stdout.flush()
    while True:
        conn, _ = server.accept()
        with conn:
            f = conn.makefile("rwb")
            try:
                request = json.loads(f.readline())
                pid = os.fork()
                if pid == 0:
                    server.close()
                    conn.close()
                    _enter(request)
                answer: dict[str, Any] = {"pid": pid}
            except (OSError, ValueError, KeyError) as exc:
                answer = {"error": str(exc)}
            f.write(json.dumps(answer).encode() + b"\n")
            f.flush()


if __name__ == "__main__":
    serve(sys.argv[1])
