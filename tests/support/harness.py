"""Real services on ephemeral ports, one per test, for the fixtures in
tests/conftest.py and for tests that need more than one.

BACKENDS parametrizes a test over SQLite and PostgreSQL (the `db` fixture).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from swarm.quota.v1 import quota_pb2_grpc as quota_grpc
from swarm.telemetry.v1 import telemetry_pb2_grpc as telemetry_grpc
from swarm.ticketing.v1 import ticketing_pb2_grpc as ticketing_grpc
from swarm_quota import server as quota_server
from swarm_quota.config import Settings as QuotaSettings
from swarm_telemetry import server as telemetry_server
from swarm_telemetry.config import Settings as TelemetrySettings
from swarm_ticketing import server as ticketing_server
from swarm_ticketing.config import Settings as TicketingSettings
from swarmcommon.clock import ManualClock
from swarmcommon.grpcclient import channel

BACKENDS = pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)


@dataclass
class TicketingHarness:
    app: ticketing_server.Ticketing
    clock: ManualClock
    channel: grpc.Channel
    stub: ticketing_grpc.TicketingServiceStub
    url: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.port}"

    def stop(self) -> None:
        self.channel.close()
        self.app.stop(grace=1)


def start_ticketing(url: str, **overrides: Any) -> TicketingHarness:
    """A real ticketing gRPC server on `url` with a manual clock (the reaper is run by hand)."""
    clock = ManualClock()
    values: dict[str, Any] = {"listen_address": "127.0.0.1:0", "reaper_interval_seconds": 0}
    settings = TicketingSettings(database_url=url, **{**values, **overrides})
    app = ticketing_server.start(settings, clock=clock)
    ch = channel(f"127.0.0.1:{app.port}")
    return TicketingHarness(app, clock, ch, ticketing_grpc.TicketingServiceStub(ch), url)


@dataclass
class QuotaHarness:
    app: quota_server.Quota
    clock: ManualClock
    channel: grpc.Channel
    stub: quota_grpc.QuotaServiceStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.port}"

    def stop(self) -> None:
        self.channel.close()
        self.app.stop(grace=1)


def start_quota(url: str, **overrides: Any) -> QuotaHarness:
    """A real quota gRPC server on `url` with a manual clock."""
    clock = ManualClock()
    # Development mode: quota makes and keeps its own API-key pepper.
    settings = QuotaSettings(
        database_url=url, listen_address="127.0.0.1:0", **{"dev_mode": True, **overrides}
    )
    app = quota_server.start(settings, clock=clock)
    ch = channel(f"127.0.0.1:{app.port}")
    return QuotaHarness(app, clock, ch, quota_grpc.QuotaServiceStub(ch))


@dataclass
class TelemetryHarness:
    app: telemetry_server.Telemetry
    channel: grpc.Channel
    stub: telemetry_grpc.TelemetryServiceStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.port}"

    def provider(self, service_name: str = "swarm-agent", **resource: Any) -> TracerProvider:
        """A stock SDK provider exporting to this server with the stock OTLP exporter."""
        provider = TracerProvider(resource=Resource.create({"service.name": service_name, **resource}))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=self.target, insecure=True))
        )
        return provider

    def stop(self) -> None:
        self.channel.close()
        self.app.stop(grace=1)


def start_telemetry(url: str, **overrides: Any) -> TelemetryHarness:
    """A real telemetry server (TelemetryService + OTLP TraceService); retention run by hand."""
    values: dict[str, Any] = {"listen_address": "127.0.0.1:0", "retention_interval_seconds": 0}
    app = telemetry_server.start(TelemetrySettings(database_url=url, **{**values, **overrides}))
    ch = channel(f"127.0.0.1:{app.port}")
    return TelemetryHarness(app, ch, telemetry_grpc.TelemetryServiceStub(ch))
