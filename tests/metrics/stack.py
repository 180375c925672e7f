"""A real local mesh whose every service serves /metrics on a free port:
quota, events, telemetry and ticketing gRPC servers, the gateway under
uvicorn, and a webhook receiver. Like tests/support/mesh.py, but keeping
each service's handle, whose `metrics_port` the tests scrape."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx

from swarm.telemetry.v1 import telemetry_pb2_grpc as telpb_grpc
from swarm.ticketing.v1 import ticketing_pb2_grpc as tpb_grpc
from swarm_events import server as events_server
from swarm_events.config import Settings as EventsSettings
from swarm_gateway.config import Settings as GatewaySettings
from swarm_gateway.main import create_app
from swarm_quota import server as quota_server
from swarm_quota.config import Settings as QuotaSettings
from swarm_telemetry import server as telemetry_server
from swarm_telemetry.config import Settings as TelemetrySettings
from swarm_ticketing import server as ticketing_server
from swarm_ticketing.config import Settings as TicketingSettings
from swarmcommon.grpcclient import channel
from tests.support.mesh import ADMIN_TOKEN, LiveServer
from tests.support.receivers import Receiver, serve_receiver


@dataclass
class Stack:
    base_url: str
    http: httpx.Client
    ticketing: tpb_grpc.TicketingServiceStub
    telemetry: telpb_grpc.TelemetryServiceStub
    telemetry_channel: grpc.Channel
    # Service name -> its /metrics port.
    metrics_ports: dict[str, int]
    receiver: Receiver

    def admin(self, method: str, path: str, **kw: object) -> httpx.Response:
        return self.http.request(method, path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, **kw)  # type: ignore[arg-type]

    def tenant_with_key(self, tenant_id: str, **overrides: int) -> str:
        r = self.admin(
            "POST", "/admin/tenants", json={"id": tenant_id, "plan": "pro", "overrides": overrides}
        )
        assert r.status_code == 201, r.text
        r = self.admin("POST", f"/admin/tenants/{tenant_id}/api-keys", json={"display_name": "metrics"})
        assert r.status_code == 201, r.text
        return str(r.json()["secret"])

    def as_key(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def run_stack(tmp_path: Path) -> Iterator[Stack]:
    def db(name: str) -> str:
        return f"sqlite:///{tmp_path / name}.db"

    quota = quota_server.start(
        QuotaSettings(
            database_url=db("quota"),
            listen_address="127.0.0.1:0",
            api_key_pepper=secrets.token_hex(32),
            metrics_port=0,
        )
    )
    events = events_server.start(
        EventsSettings(
            database_url=db("events"),
            listen_address="127.0.0.1:0",
            webhook_allow_networks="127.0.0.0/8",
            retry_schedule_seconds="0.05,0.05",
            retry_jitter=0,
            metrics_port=0,
        )
    )
    telemetry = telemetry_server.start(
        TelemetrySettings(
            database_url=db("telemetry"),
            listen_address="127.0.0.1:0",
            quota_target=f"127.0.0.1:{quota.port}",
            retention_interval_seconds=0,
            metrics_port=0,
        )
    )
    ticketing = ticketing_server.start(
        TicketingSettings(
            database_url=db("ticketing"),
            listen_address="127.0.0.1:0",
            reaper_interval_seconds=0,
            quota_target=f"127.0.0.1:{quota.port}",
            events_target=f"127.0.0.1:{events.port}",
            metrics_port=0,
        )
    )
    app = create_app(
        GatewaySettings(
            ticketing_target=f"127.0.0.1:{ticketing.port}",
            quota_target=f"127.0.0.1:{quota.port}",
            events_target=f"127.0.0.1:{events.port}",
            telemetry_target=f"127.0.0.1:{telemetry.port}",
            admin_token=ADMIN_TOKEN,
            auth_cache_seconds=0.2,
        )
    )
    ports = {
        "quota": quota.handle.metrics_port,
        "events": events.handle.metrics_port,
        "telemetry": telemetry.handle.metrics_port,
        "ticketing": ticketing.handle.metrics_port,
    }
    tch, telch = channel(f"127.0.0.1:{ticketing.port}"), channel(f"127.0.0.1:{telemetry.port}")
    try:
        with (
            serve_receiver() as receiver,
            LiveServer(app) as base_url,
            httpx.Client(base_url=base_url, timeout=30) as http,
        ):
            assert all(ports.values()), ports
            yield Stack(
                base_url,
                http,
                tpb_grpc.TicketingServiceStub(tch),
                telpb_grpc.TelemetryServiceStub(telch),
                telch,
                {name: port for name, port in ports.items() if port},
                receiver,
            )
    finally:
        tch.close()
        telch.close()
        for service in (ticketing, events, telemetry, quota):
            service.stop(grace=1)
