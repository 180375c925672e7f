"""Real services with mutual TLS and authorization, as they run in a cluster
(not in insecure dev mode, whatever the environment says).

    svc = start_secure("ticketing", pki, tmp_path)     # mesh port + agent port
    svc.target, svc.agent_target, svc.access["swarm.ticketing.v1.TicketingService"]
    svc.stop()

vmhost needs root: it gets a bridge of its own, claimed under the same pool
and lock file as the vmhost tests' bridges so concurrent runs never share one.
It knows tests.support.pki.AGENT as a live agent (no guest runs), so that
agent's tokens are honoured there as they are by ticketing and telemetry.
"""

from __future__ import annotations

import ipaddress
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm_events import server as events_server
from swarm_events.config import Settings as EventsSettings
from swarm_events.servicer import ACCESS as EVENTS_ACCESS
from swarm_quota import server as quota_server
from swarm_quota.config import Settings as QuotaSettings
from swarm_quota.servicer import ACCESS as QUOTA_ACCESS
from swarm_telemetry import server as telemetry_server
from swarm_telemetry.config import Settings as TelemetrySettings
from swarm_telemetry.servicer import ACCESS as TELEMETRY_ACCESS
from swarm_telemetry.servicer import OTLP_ACCESS
from swarm_ticketing import learning_servicer, marketplace_servicer, snapshot_servicer, template_servicer
from swarm_ticketing import server as ticketing_server
from swarm_ticketing.config import Settings as TicketingSettings
from swarm_ticketing.servicer import ACCESS as TICKETING_ACCESS
from swarm_vmhost import network
from swarm_vmhost import server as vmhost_server
from swarm_vmhost.config import Settings as VmHostSettings
from swarm_vmhost.domain import AgentRole, DriverName, SpawnRequest
from swarm_vmhost.servicer import ACCESS as VMHOST_ACCESS
from swarmcommon.agenttoken import SIGNING_KEY_FILE
from swarmcommon.authz import Access
from tests.support.pki import AGENT, MeshPki

# As tests/vmhost/harness.py: test bridges take a /24 of this range, chosen under this lock.
TEST_POOL = ipaddress.IPv4Network("10.213.0.0/16")
BRIDGE_LOCK = Path(tempfile.gettempdir()) / "swarm-vmhost-test-bridges.lock"

# The services that serve guests on a second port, with agent tokens.
AGENT_PORT_SERVICES = frozenset({"ticketing", "telemetry", "vmhost"})
# Each server's gRPC services and the access table it declares for each.
TABLES: dict[str, dict[str, Access]] = {
    "quota": {quota_server.SERVICE_NAME: QUOTA_ACCESS},
    "ticketing": {
        ticketing_server.SERVICE_NAME: TICKETING_ACCESS,
        template_servicer.SERVICE_NAME: template_servicer.ACCESS,
        marketplace_servicer.SERVICE_NAME: marketplace_servicer.ACCESS,
        snapshot_servicer.SERVICE_NAME: snapshot_servicer.ACCESS,
        learning_servicer.SERVICE_NAME: learning_servicer.ACCESS,
    },
    "events": {events_server.SERVICE_NAME: EVENTS_ACCESS},
    "telemetry": {
        telemetry_server.SERVICE_NAME: TELEMETRY_ACCESS,
        telemetry_server.OTLP_SERVICE_NAME: OTLP_ACCESS,
    },
    "vmhost": {vmhost_server.SERVICE_NAME: VMHOST_ACCESS},
}


@dataclass
class SecureService:
    name: str
    port: int
    agent_port: int | None
    # The access table each gRPC service of this server was started with.
    access: Mapping[str, Access]
    stop: Callable[[], None]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def agent_target(self) -> str:
        if self.agent_port is None:
            raise ValueError(f"{self.name} has no agent port")
        return f"127.0.0.1:{self.agent_port}"


def start_secure(
    name: str, pki: MeshPki, workdir: Path, tls_dir: Path | None = None, **overrides: Any
) -> SecureService:
    """`name` started on SQLite in `workdir`, with its mesh certificate
    (`tls_dir`, by default the mesh PKI's directory for it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{workdir / f'{name}.db'}",
        "listen_address": "127.0.0.1:0",
        "insecure_dev": False,
        "tls_dir": str(tls_dir or pki.identity(name)),
        "trust_domain": pki.trust_domain,
    }
    if name in AGENT_PORT_SERVICES:
        values |= {"agent_listen_address": "127.0.0.1:0", "agent_token_public_keys": str(pki.public_key)}
    values |= overrides
    if name == "quota":
        quota = quota_server.start(QuotaSettings(**{"dev_mode": True, **values}))
        handle, stop = quota.handle, quota.stop
    elif name == "events":
        events = events_server.start(EventsSettings(**{"dispatcher_workers": 0, **values}))
        handle, stop = events.handle, events.stop
    elif name == "ticketing":
        ticketing = ticketing_server.start(TicketingSettings(**{"reaper_interval_seconds": 0, **values}))
        handle, stop = ticketing.handle, ticketing.stop
    elif name == "telemetry":
        telemetry = telemetry_server.start(TelemetrySettings(**{"retention_interval_seconds": 0, **values}))
        handle, stop = telemetry.handle, telemetry.stop
    elif name == "vmhost":
        return _start_vmhost(values, pki, workdir)
    else:
        raise ValueError(f"unknown service {name}")
    return SecureService(name, handle.port, handle.agent_port, TABLES[name], lambda: stop(1))


def _start_vmhost(values: dict[str, Any], pki: MeshPki, workdir: Path) -> SecureService:
    problem = network.probe()
    if problem is not None:
        raise RuntimeError(f"vmhost creates a bridge: {problem}")
    bridge = network.claim_bridge(TEST_POOL, "sws", BRIDGE_LOCK)
    try:
        settings = VmHostSettings(
            **{
                "bridge_name": bridge.name,
                "bridge_cidr": str(bridge.network),
                "workroot": str(workdir / "vmhost"),
                "monitor_interval_seconds": 0,
                # No guest runs here: nor does the warm interpreter kept for the standard one.
                "guest_command": "python -m swarmagent.guest --never-started",
                "agent_token_signing_key": str(pki.signing_dir / SIGNING_KEY_FILE),
                **values,
            }
        )
        app = vmhost_server.start(settings)
    except BaseException:
        network.remove_bridge(bridge)
        raise

    def stop() -> None:
        try:
            app.stop(1)
        finally:
            network.remove_bridge(bridge)

    # vmhost honours only the tokens of agents it runs: make the test agent one of them.
    agent = app.host.agents.create(
        AGENT.agent_id,
        SpawnRequest(AGENT.tenant_id, "default", AgentRole(AGENT.role), DriverName.PROCESS, None),
        DriverName.PROCESS,
        None,
    )[0]
    assert agent.is_live, agent
    handle = app.handle
    return SecureService("vmhost", handle.port, handle.agent_port, TABLES["vmhost"], stop)
