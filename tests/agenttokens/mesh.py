"""ticketing, telemetry and vmhost with real mutual TLS, agent ports and
agent tokens (insecure_dev=False), each on its own database, for the
agent-token tests; plus the channels an operator and a guest use.

    mesh = start_mesh({"ticketing": url1, "telemetry": url2, "vmhost": url3}, tmp_path)
    ops = mesh.operator_ticketing()                 # mutual TLS as operator/admin
    agent = mesh.agent_ticketing()                  # TLS to the agent port, no certificate
    agent.ClaimTicket(request, metadata=bearer(mesh.token("agent-id", "acme")))
"""

from __future__ import annotations

import ipaddress
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa

from swarm.telemetry.v1 import telemetry_pb2_grpc as tel_grpc
from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm.ticketing.v1 import ticketing_pb2_grpc as tpb_grpc
from swarm.vmhost.v1 import vmhost_pb2_grpc as vpb_grpc
from swarm_telemetry import server as telemetry_server
from swarm_telemetry.config import Settings as TelemetrySettings
from swarm_ticketing import server as ticketing_server
from swarm_ticketing.config import Settings as TicketingSettings
from swarm_vmhost import network
from swarm_vmhost import server as vmhost_server
from swarm_vmhost.config import Settings as VmHostSettings
from swarmcommon.agenttoken import (
    PUBLIC_KEY_FILE,
    SIGNING_KEY_FILE,
    AgentIdentity,
    TokenSigner,
    write_signing_key,
)
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.localproc import free_port
from swarmcommon.pki import CA_CERT, issue_mesh
from tests.support.pki import own_channel, tls_channel

TEST_POOL = ipaddress.IPv4Network("10.213.0.0/16")
# Shared with tests/vmhost: every test bridge on this host is claimed under it.
BRIDGE_LOCK = Path(tempfile.gettempdir()) / "swarm-vmhost-test-bridges.lock"


@dataclass
class AgentMesh:
    pki: Path
    ticketing: ticketing_server.Ticketing
    telemetry: telemetry_server.Telemetry
    vmhost: vmhost_server.VmHostApp
    bridge: network.Bridge
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def ca(self) -> Path:
        return self.pki / "vmhost" / CA_CERT  # every workload directory holds the CA

    def signer(self, clock: Clock | None = None, key_dir: str = "agent-signing") -> TokenSigner:
        return TokenSigner.from_file(
            self.pki / key_dir / SIGNING_KEY_FILE, clock=clock, ttl=timedelta(minutes=5)
        )

    def token(self, agent_id: str, tenant_id: str, role: str = "coder", **kw: Any) -> str:
        return self.signer(**kw).mint(AgentIdentity(agent_id, tenant_id, role))[0]

    def _keep(self, ch: grpc.Channel) -> grpc.Channel:
        self.channels.append(ch)
        return ch

    def operator_ticketing(self) -> tpb_grpc.TicketingServiceStub:
        ch = own_channel(f"127.0.0.1:{self.ticketing.port}", self.pki / "operator-admin")
        return tpb_grpc.TicketingServiceStub(self._keep(ch))

    def operator_telemetry(self) -> tel_grpc.TelemetryServiceStub:
        ch = own_channel(f"127.0.0.1:{self.telemetry.port}", self.pki / "operator-admin")
        return tel_grpc.TelemetryServiceStub(self._keep(ch))

    def operator_vmhost(self) -> vpb_grpc.VmHostServiceStub:
        ch = own_channel(f"127.0.0.1:{self.vmhost.port}", self.pki / "operator-admin")
        return vpb_grpc.VmHostServiceStub(self._keep(ch))

    def agent_channel(self, service: str) -> grpc.Channel:
        app = {"ticketing": self.ticketing, "telemetry": self.telemetry, "vmhost": self.vmhost}[service]
        # What a guest dials: TLS trusting the mesh CA, no client certificate.
        return self._keep(tls_channel(f"127.0.0.1:{app.handle.agent_port}", self.ca.read_bytes()))

    def agent_ticketing(self) -> tpb_grpc.TicketingServiceStub:
        return tpb_grpc.TicketingServiceStub(self.agent_channel("ticketing"))

    def agent_telemetry(self) -> tel_grpc.TelemetryServiceStub:
        return tel_grpc.TelemetryServiceStub(self.agent_channel("telemetry"))

    def agent_vmhost(self) -> vpb_grpc.VmHostServiceStub:
        return vpb_grpc.VmHostServiceStub(self.agent_channel("vmhost"))

    def project(self, tenant_id: str, keys: Sequence[str] = ("a",)) -> tpb.CreateProjectResponse:
        return self.operator_ticketing().CreateProject(
            tpb.CreateProjectRequest(
                tenant_id=tenant_id,
                name="p",
                tickets=[tpb.TicketSpec(key=k, name=f"ticket {k}") for k in keys],
                request_id=str(uuid.uuid4()),
            )
        )

    def snapshot(self) -> dict[str, list[tuple[object, ...]]]:
        """Every row of every table of the three services, to assert a call wrote nothing."""
        return {
            f"{service}.{table}": rows
            for service, db in (
                ("ticketing", self.ticketing.db),
                ("telemetry", self.telemetry.db),
                ("vmhost", self.vmhost.db),
            )
            for table, rows in _rows(db).items()
        }

    def stop(self) -> None:
        for ch in self.channels:
            ch.close()
        for app in (self.vmhost, self.ticketing, self.telemetry):
            try:
                app.stop(grace=1)
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass
        network.remove_bridge(self.bridge)


def _rows(db: Database) -> dict[str, list[tuple[object, ...]]]:
    with db.engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        return {
            name: sorted(map(tuple, conn.execute(sa.text(f'SELECT * FROM "{name}"')).all()), key=repr)
            for name in names
        }


def make_pki(directory: Path) -> Path:
    issue_mesh(directory)
    write_signing_key(directory / "agent-signing")
    write_signing_key(directory / "other-signing")  # a key no service trusts
    return directory


def start_mesh(urls: dict[str, str], tmp_path: Path, **vmhost_overrides: Any) -> AgentMesh:
    pki = make_pki(tmp_path / "pki")
    public = str(pki / "agent-signing" / PUBLIC_KEY_FILE)
    vmhost_port = free_port()  # ticketing and telemetry poll its revocations
    common: dict[str, Any] = {
        "listen_address": "127.0.0.1:0",
        "agent_listen_address": "127.0.0.1:0",
        "insecure_dev": False,
        "agent_token_public_keys": public,
    }
    ticketing = ticketing_server.start(
        TicketingSettings(
            **common,
            database_url=urls["ticketing"],
            tls_dir=str(pki / "ticketing"),
            reaper_interval_seconds=0,
            vmhost_target=f"127.0.0.1:{vmhost_port}",
        )
    )
    telemetry = telemetry_server.start(
        TelemetrySettings(
            **common,
            database_url=urls["telemetry"],
            tls_dir=str(pki / "telemetry"),
            retention_interval_seconds=0,
            vmhost_target=f"127.0.0.1:{vmhost_port}",
        )
    )
    bridge = network.claim_bridge(TEST_POOL, "swt", BRIDGE_LOCK)
    values: dict[str, Any] = {
        **common,
        "database_url": urls["vmhost"],
        "listen_address": f"127.0.0.1:{vmhost_port}",
        "tls_dir": str(pki / "vmhost"),
        "agent_token_signing_key": str(pki / "agent-signing" / SIGNING_KEY_FILE),
        "bridge_name": bridge.name,
        "bridge_cidr": str(bridge.network),
        "workroot": str(tmp_path / "vmhost"),
        "default_driver": "process",
        # The stock guest, started cold (no zygote): it heartbeats with its token.
        "guest_command": "python -u -m swarmagent.guest",
        "monitor_interval_seconds": 0,
        "heartbeat_interval_seconds": 0.5,
        "ticketing_target": f"127.0.0.1:{ticketing.port}",
        "ticketing_agent_target": f"127.0.0.1:{ticketing.handle.agent_port}",
        "telemetry_agent_target": f"127.0.0.1:{telemetry.handle.agent_port}",
    }
    vmhost = vmhost_server.start(VmHostSettings(**{**values, **vmhost_overrides}))
    return AgentMesh(pki, ticketing, telemetry, vmhost, bridge)
