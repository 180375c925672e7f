"""A real telemetry gRPC server (TelemetryService + OTLP TraceService) per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from swarm.telemetry.v1 import telemetry_pb2_grpc as pb_grpc
from swarm_telemetry import server as telemetry_server
from swarm_telemetry.config import Settings
from swarmcommon.grpcclient import channel


@dataclass
class TelemetryHarness:
    app: telemetry_server.Telemetry
    channel: grpc.Channel
    stub: pb_grpc.TelemetryServiceStub

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


def start_telemetry(db: str, **overrides: Any) -> TelemetryHarness:
    app = telemetry_server.start(
        Settings(database_url=db, listen_address="127.0.0.1:0", retention_interval_seconds=0, **overrides)
    )
    ch = channel(f"127.0.0.1:{app.port}")
    return TelemetryHarness(app, ch, pb_grpc.TelemetryServiceStub(ch))


@pytest.fixture
def telemetry(db: str) -> Iterator[TelemetryHarness]:
    harness = start_telemetry(db)
    try:
        yield harness
    finally:
        harness.channel.close()
        harness.app.stop(grace=1)
