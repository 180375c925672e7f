"""The local mesh: every service its own process on its own fresh SQLite
database under the demo's directory, every one exporting spans to telemetry.

Telemetry, ticketing and vmhost listen on every address: agents in network
namespaces reach them through the bridge address.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from swarmcommon.localproc import free_port, start_service
from swarmdemo.console import console, poll


@dataclass(frozen=True)
class Mesh:
    quota: str
    telemetry: str
    events: str
    ticketing: str
    gateway: str  # the REST base URL

    @property
    def targets(self) -> dict[str, str]:
        return {
            "ticketing": self.ticketing,
            "quota": self.quota,
            "events": self.events,
            "telemetry": self.telemetry,
        }


@contextmanager
def running(name: str, proc: subprocess.Popen[bytes], log: Path) -> Iterator[None]:
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        console.print(f"{name} stopped (exit {proc.returncode}); log {log}")


def _service(
    stack: ExitStack, workdir: Path, name: str, settings: Mapping[str, str], target: str | None = None
) -> str:
    """Start swarm_<name> on its own database; stopped when `stack` closes."""
    log_path = workdir / f"{name}.log"
    log = stack.enter_context(open(log_path, "wb"))
    proc, target = start_service(
        f"swarm_{name}",
        f"SWARM_{name.upper()}_",
        {
            "DATABASE_URL": f"sqlite:///{workdir / f'{name}.db'}",
            "LOG_LEVEL": "WARNING",
            # Until guests carry agent tokens, the demo mesh runs in dev mode.
            "INSECURE_DEV": "true",
            **settings,
        },
        output=log,
        target=target,
    )
    stack.enter_context(running(name, proc, log_path))
    return target


def start_mesh(stack: ExitStack, workdir: Path, admin_token: str, telemetry: str) -> Mesh:
    """Quota, telemetry (on `telemetry`), events, ticketing and the gateway, each serving."""
    # A fresh database each run, so a fresh secret pepper for its API key hashes.
    quota = _service(stack, workdir, "quota", {"API_KEY_PEPPER": secrets.token_hex(32)})
    _service(stack, workdir, "telemetry", {"QUOTA_TARGET": quota}, target=telemetry)
    # The demo's receiver is on this machine; a real install allows only
    # public addresses (or its own on-prem ranges).
    events = _service(stack, workdir, "events", {"WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8"})
    ticketing = _service(
        stack,
        workdir,
        "ticketing",
        {
            "QUOTA_TARGET": quota,
            "EVENTS_TARGET": events,
            "REAPER_INTERVAL_SECONDS": "1",
            "LEASE_SECONDS": "60",
        },
        target=f"0.0.0.0:{free_port()}",
    )
    partial = Mesh(quota, telemetry, events, ticketing, gateway="")
    gateway = _start_gateway(stack, workdir, partial.targets, admin_token)
    return Mesh(quota, telemetry, events, ticketing, gateway)


def _start_gateway(stack: ExitStack, workdir: Path, targets: Mapping[str, str], admin_token: str) -> str:
    port = free_port()
    env = {
        **os.environ,
        "SWARM_GATEWAY_PORT": str(port),
        **{f"SWARM_GATEWAY_{name.upper()}_TARGET": target for name, target in targets.items()},
        "SWARM_GATEWAY_ADMIN_TOKEN": admin_token,
        "SWARM_GATEWAY_LOG_LEVEL": "WARNING",
        "SWARM_GATEWAY_INSECURE_DEV": "true",
    }
    log_path = workdir / "gateway.log"
    log = stack.enter_context(open(log_path, "wb"))
    proc = subprocess.Popen([sys.executable, "-m", "swarm_gateway"], env=env, stdout=log, stderr=log)
    stack.enter_context(running("gateway", proc, log_path))
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"gateway exited with {proc.returncode}; see {log_path}")
        try:
            return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False  # not listening yet

    if not poll(ready, timeout=30, interval=0.1):
        raise SystemExit(f"gateway did not start; see {log_path}")
    return base


def start_vmhost(stack: ExitStack, workdir: Path, mesh: Mesh, guest_env: Mapping[str, str]) -> str:
    """vmhost, whose guests run the agent runtime configured by `guest_env`."""
    return _service(
        stack,
        workdir,
        "vmhost",
        {
            "WORKROOT": str((workdir / "vmhost").resolve()),
            "QUOTA_TARGET": mesh.quota,
            "TICKETING_TARGET": mesh.ticketing,
            "EVENTS_TARGET": mesh.events,
            "TELEMETRY_TARGET": mesh.telemetry,
            "GUEST_WORK": "swarmagent.runtime:work",
            "GUEST_ENV": ";".join(f"{k}={v}" for k, v in guest_env.items()),
            "HEARTBEAT_INTERVAL_SECONDS": "1",
            # A guest is failed after 10 s of silence: a busy laptop should
            # not see healthy agents replaced.
            "MISSED_HEARTBEATS": "10",
            "MONITOR_INTERVAL_SECONDS": "1",
        },
        target=f"0.0.0.0:{free_port()}",
    )
