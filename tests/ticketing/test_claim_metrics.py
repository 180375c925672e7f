"""Ticketing's claim metrics leave the process over OTLP: a real ticketing
process, a real OTLP metrics receiver (gRPC) started by the test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as mpb_grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarmcommon.grpcclient import channel
from swarmcommon.localproc import start_service
from tests.support.otlp import otlp_receiver
from tests.support.ticketing import create_project, spec, tenant
from tests.support.waiting import eventually


class Receiver(mpb_grpc.MetricsServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.points: dict[str, list[object]] = {}
        self._lock = threading.Lock()

    def Export(
        self, request: mpb.ExportMetricsServiceRequest, context: grpc.ServicerContext
    ) -> mpb.ExportMetricsServiceResponse:
        with self._lock:
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        kind = metric.WhichOneof("data")
                        self.points.setdefault(metric.name, []).extend(getattr(metric, kind).data_points)
        return mpb.ExportMetricsServiceResponse()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    servicer = Receiver()
    with otlp_receiver(
        lambda server: mpb_grpc.add_MetricsServiceServicer_to_server(servicer, server)
    ) as port:
        yield servicer, port


def test_claims_go_out_as_metrics_by_how_they_matched(
    receiver: tuple[Receiver, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, port = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "true")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    proc, target = start_service(
        "swarm_ticketing",
        "SWARM_TICKETING_",
        {"DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}", "INSECURE_DEV": "true", "LOG_LEVEL": "WARNING"},
    )
    ch = channel(target)
    try:
        stub = pb_grpc.TicketingServiceStub(ch)
        t = tenant()
        call = stub.ClaimTicket.future(
            pb.ClaimTicketRequest(tenant_id=t, agent_id="agent-a", wait_duration=Duration(seconds=20)),
            timeout=30,
        )
        eventually(lambda: stub.GetClaimStats(pb.GetClaimStatsRequest()).parked_pollers == 1)
        create_project(stub, t, [spec("one"), spec("two")])
        assert call.result().HasField("ticket")
        assert stub.ClaimTicket(pb.ClaimTicketRequest(tenant_id=t, agent_id="agent-b")).HasField("ticket")

        def exported() -> bool:
            claims = sink.points.get("swarm.ticketing.claims", [])
            by_match = {
                next(a.value.string_value for a in p.attributes if a.key == "swarm.claim.match"): p.as_int
                for p in claims
            }
            latency = sink.points.get("swarm.ticketing.ready_to_claimed", [])
            return by_match == {"sync": 1, "backlog": 1} and any(p.count == 2 for p in latency)

        eventually(exported, what="claims by match and their latency at the receiver")
    finally:
        ch.close()
        proc.terminate()
        proc.wait(timeout=30)
