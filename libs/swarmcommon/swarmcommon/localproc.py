"""Running a Swarm service as a local child process (demo, benchmarks, tests):
pick a free loopback port, start `python -m <module>`, wait until its gRPC
health service answers SERVING."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import IO

from swarmcommon.clients.channel import ServiceChannel
from swarmcommon.tls import ClientTls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_serving(
    target: str, proc: subprocess.Popen[bytes], timeout: float = 30.0, tls: ClientTls | None = None
) -> None:
    """Block until `target` reports SERVING; fail early if `proc` exits.
    `tls`: the caller's certificate, for a service on mutual TLS."""
    deadline = time.monotonic() + timeout
    channel = ServiceChannel(local_target(target), default_timeout=1.0, tls=tls)
    try:
        while channel.health(timeout=1.0) != "SERVING":
            if proc.poll() is not None:
                raise RuntimeError(f"service process exited with {proc.returncode} before serving")
            if time.monotonic() > deadline:
                raise RuntimeError(f"service at {target} not serving after {timeout:.0f}s")
            time.sleep(0.1)
    finally:
        channel.close()


def local_target(target: str) -> str:
    """A listen address as a client on this machine dials it (0.0.0.0 is not
    a name a certificate holds)."""
    host, _, port = target.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]", "") else target


def start_service(
    module: str,
    env_prefix: str,
    settings: Mapping[str, str],
    *,
    output: IO[bytes] | int | None = None,
    target: str | None = None,
    tls: ClientTls | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m module` on `target` (default: a free port) with
    SWARM_<SERVICE>_* settings.

    Returns the process and its gRPC target once it is serving.
    """
    target = target or f"127.0.0.1:{free_port()}"
    # Services started here share the machine: /metrics on a free port unless told.
    env = {f"{env_prefix}METRICS_PORT": "0", **os.environ, f"{env_prefix}LISTEN_ADDRESS": target}
    env.update({f"{env_prefix}{k}": v for k, v in settings.items()})
    proc = subprocess.Popen([sys.executable, "-m", module], env=env, stdout=output, stderr=output)
    try:
        wait_until_serving(target, proc, tls=tls)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, target
