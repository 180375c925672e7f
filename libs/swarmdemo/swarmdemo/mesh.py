"""The local mesh: every service its own process on its own fresh SQLite
database under the demo's directory, every one exporting spans to telemetry.

Every connection is mutual TLS with certificates from a CA made for this run
(var/demo/pki); agents hold only the tokens vmhost signs. Telemetry,
ticketing and vmhost also listen for agents on every address: guests in
network namespaces reach those ports through the bridge address.
"""

from __future__ import annotations

import base64
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

from swarmcommon.agenttoken import PUBLIC_KEY_FILE, SIGNING_KEY_FILE, write_signing_key
from swarmcommon.clients.channel import ServiceChannel
from swarmcommon.localproc import free_port, local_target, start_service
from swarmcommon.pki import issue_mesh
from swarmcommon.tls import ClientTls
from swarmdemo.console import console, poll


@dataclass(frozen=True)
class MeshPki:
    """The demo's CA, a certificate per service and for the operator (this
    process), and the key pair vmhost signs agent tokens with."""

    root: Path

    @classmethod
    def create(cls, root: Path) -> MeshPki:
        issue_mesh(root)
        write_signing_key(root / "agent-signing")
        return cls(root)

    def tls_dir(self, workload: str) -> str:
        return str(self.root / workload)

    @property
    def operator(self) -> ClientTls:
        return ClientTls.in_dir(self.root / "operator-admin")

    @property
    def signing_key(self) -> str:
        return str(self.root / "agent-signing" / SIGNING_KEY_FILE)

    @property
    def public_key(self) -> str:
        return str(self.root / "agent-signing" / PUBLIC_KEY_FILE)


@dataclass(frozen=True)
class Mesh:
    quota: str
    telemetry: str
    events: str
    ticketing: str
    gateway: str  # the REST base URL
    pki: MeshPki
    # The ports agents use (TLS without client certificates, a token per call).
    ticketing_agents: str = ""
    telemetry_agents: str = ""
    llm_proxy: str = ""  # the LLM proxy's URL as this host reaches it
    vmhost: str = ""  # chosen up front: ticketing and telemetry ask it for revoked tokens

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
    stack: ExitStack,
    workdir: Path,
    pki: MeshPki,
    name: str,
    settings: Mapping[str, str],
    target: str | None = None,
) -> str:
    """Start swarm_<name> on its own database with its own certificate;
    stopped when `stack` closes. Returns the address other services dial."""
    log_path = workdir / f"{name}.log"
    log = stack.enter_context(open(log_path, "wb"))
    proc, target = start_service(
        f"swarm_{name}",
        f"SWARM_{name.upper()}_",
        {
            "DATABASE_URL": f"sqlite:///{workdir / f'{name}.db'}",
            "LOG_LEVEL": "WARNING",
            "INSECURE_DEV": "false",
            "TLS_DIR": pki.tls_dir(name),
            **settings,
        },
        output=log,
        target=target,
        tls=pki.operator,
    )
    stack.enter_context(running(name, proc, log_path))
    return local_target(target)


def repository_root(workdir: Path) -> Path:
    """Where the demo's local git repositories live, one directory per
    tenant: ticketing lets a tenant's projects name only its own, and
    vmhost's guests clone only their tenant's (LOCAL_REPOSITORY_ROOT)."""
    return (workdir / "repos").resolve()


def _everywhere() -> str:
    """A listen address on every interface (guests reach it over the bridge)."""
    return f"0.0.0.0:{free_port()}"


def start_mesh(
    stack: ExitStack, workdir: Path, pki: MeshPki, admin_token: str, telemetry: str, llm_upstream: str
) -> Mesh:
    """Quota, telemetry (on `telemetry`, with the LLM proxy in front of
    `llm_upstream`), events, ticketing and the gateway, each serving."""
    # Chosen up front: telemetry asks ticketing whether a guest holds the
    # ticket it spends on, and both ask vmhost for revoked tokens.
    vmhost, ticketing = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    agents = {"AGENT_TOKEN_PUBLIC_KEYS": pki.public_key, "VMHOST_TARGET": vmhost}
    # A fresh database each run, so a fresh secret pepper for its API key hashes.
    quota = _service(stack, workdir, pki, "quota", {"API_KEY_PEPPER": secrets.token_hex(32)})
    telemetry_agents, proxy_port = _everywhere(), free_port()
    telemetry = _service(
        stack,
        workdir,
        pki,
        "telemetry",
        {
            "QUOTA_TARGET": quota,
            "TICKETING_TARGET": ticketing,
            "AGENT_LISTEN_ADDRESS": telemetry_agents,
            **agents,
            # Guests call the model only through this proxy; the provider key
            # (here a made-up one the local model ignores) stays in telemetry.
            "LLM_PROXY_LISTEN_ADDRESS": f"0.0.0.0:{proxy_port}",
            "LLM_PROXY_UPSTREAM_URL": llm_upstream,
            "LLM_PROXY_UPSTREAM_API_KEY": f"sk-demo-{secrets.token_hex(16)}",
        },
        target=telemetry,
    )
    llm_proxy = f"https://127.0.0.1:{proxy_port}"
    # The demo's receiver is on this machine; a real install allows only
    # public addresses (or its own on-prem ranges).
    events = _service(stack, workdir, pki, "events", {"WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8"})
    ticketing_agents = _everywhere()
    ticketing = _service(
        stack,
        workdir,
        pki,
        "ticketing",
        {
            "QUOTA_TARGET": quota,
            "EVENTS_TARGET": events,
            "REAPER_INTERVAL_SECONDS": "1",
            "LEASE_SECONDS": "60",
            "AGENT_LISTEN_ADDRESS": ticketing_agents,
            **agents,
            "LOCAL_REPOSITORY_ROOT": str(repository_root(workdir)),
            # Seals paid marketplace prompts; a fresh key per run (the demo's databases are too).
            "MARKETPLACE_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        },
        target=ticketing,
    )
    partial = Mesh(quota, telemetry, events, ticketing, "", pki, vmhost=vmhost)
    gateway = _start_gateway(stack, workdir, partial, admin_token)
    return Mesh(
        quota,
        telemetry,
        events,
        ticketing,
        gateway,
        pki,
        ticketing_agents=ticketing_agents,
        telemetry_agents=telemetry_agents,
        llm_proxy=llm_proxy,
        vmhost=vmhost,
    )


def _start_gateway(stack: ExitStack, workdir: Path, mesh: Mesh, admin_token: str) -> str:
    port = free_port()
    env = {
        **os.environ,
        "SWARM_GATEWAY_PORT": str(port),
        **{f"SWARM_GATEWAY_{name.upper()}_TARGET": target for name, target in mesh.targets.items()},
        "SWARM_GATEWAY_VMHOST_TARGET": mesh.vmhost,
        "SWARM_GATEWAY_ADMIN_TOKEN": admin_token,
        "SWARM_GATEWAY_LOG_LEVEL": "WARNING",
        "SWARM_GATEWAY_INSECURE_DEV": "false",
        "SWARM_GATEWAY_TLS_DIR": mesh.pki.tls_dir("gateway"),
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
        mesh.pki,
        "vmhost",
        {
            "WORKROOT": str((workdir / "vmhost").resolve()),
            "LOCAL_REPOSITORY_ROOT": str(repository_root(workdir)),
            "QUOTA_TARGET": mesh.quota,
            "TICKETING_TARGET": mesh.ticketing,
            "EVENTS_TARGET": mesh.events,
            "TELEMETRY_TARGET": mesh.telemetry,
            # Guests get these (the bridge address for 0.0.0.0) and a token.
            "AGENT_LISTEN_ADDRESS": _everywhere(),
            "TICKETING_AGENT_TARGET": mesh.ticketing_agents,
            "TELEMETRY_AGENT_TARGET": mesh.telemetry_agents,
            "LLM_PROXY_URL": mesh.llm_proxy,
            "AGENT_TOKEN_SIGNING_KEY": mesh.pki.signing_key,
            "AGENT_TOKEN_PUBLIC_KEYS": mesh.pki.public_key,
            "GUEST_WORK": "swarmagent.runtime:work",
            "GUEST_ENV": ";".join(f"{k}={v}" for k, v in guest_env.items()),
            "HEARTBEAT_INTERVAL_SECONDS": "1",
            # A guest is failed after 10 s of silence: a busy laptop should
            # not see healthy agents replaced.
            "MISSED_HEARTBEATS": "10",
            "MONITOR_INTERVAL_SECONDS": "1",
            # Without root no sandbox can run here: the demo's guests are
            # plain processes then, which vmhost allows only when chosen.
            **({} if os.geteuid() == 0 else {"DEFAULT_DRIVER": "process"}),
        },
        target=mesh.vmhost,
    )


def refuses_plaintext(target: str) -> bool:
    """What `grpcurl -plaintext` does: a health check without TLS. True when refused."""
    channel = ServiceChannel(target, default_timeout=2.0)
    try:
        return channel.health(timeout=2.0) != "SERVING"
    finally:
        channel.close()


def report_security(mesh: Mesh) -> None:
    """The one line saying how the mesh is secured, checked first: every gRPC
    port refuses a plaintext call."""
    ports = [mesh.quota, mesh.telemetry, mesh.events, mesh.ticketing, mesh.vmhost]
    ports += [local_target(t) for t in (mesh.ticketing_agents, mesh.telemetry_agents)]
    open_ports = [t for t in ports if not refuses_plaintext(t)]
    if open_ports:
        raise SystemExit(f"plaintext gRPC answered on {', '.join(open_ports)}")
    console.print(
        f"mesh security: mutual TLS everywhere (CA {mesh.pki.root / 'ca.pem'}), agents hold only "
        f"signed tokens; plaintext refused on {len(ports)} ports",
        highlight=False,
    )
