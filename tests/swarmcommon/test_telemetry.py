"""Traces leave the process over OTLP, and logs carry the trace they belong to."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarmcommon.localproc import free_port, wait_until_serving
from swarmcommon.logs import configure_logging
from tests.support.otlp import otlp_receiver


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """A real OTLP/gRPC trace receiver, as Jaeger or a collector would run."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, bytes, str]] = []  # (service, trace_id, span name)
        self.received = threading.Event()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> object:
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"),
                "",
            )
            for scope in resource_spans.scope_spans:
                self.spans.extend((service, s.trace_id, s.name) for s in scope.spans)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[_Collector, int]]:
    servicer = _Collector()
    with otlp_receiver(
        lambda server: trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    ) as port:
        yield servicer, port


def test_service_exports_spans_over_otlp_continuing_the_callers_trace(
    collector: tuple[_Collector, int], tmp_path: Path
) -> None:
    received, otlp_port = collector
    port = free_port()
    env = {
        **os.environ,
        "SWARM_TICKETING_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
        "SWARM_TICKETING_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "SWARM_TICKETING_SHUTDOWN_GRACE_SECONDS": "1",
    }
    proc = subprocess.Popen([sys.executable, "-m", "swarm_ticketing"], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_until_serving(f"127.0.0.1:{port}", proc)  # type: ignore[arg-type]
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            pb_grpc.TicketingServiceStub(ch).ListProjects(
                pb.ListProjectsRequest(tenant_id="acme"), metadata=[("traceparent", traceparent)]
            )
        proc.send_signal(signal.SIGTERM)  # shutdown flushes the batch exporter
        # Generous: on a loaded CI machine the drain and the final export take a while.
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert received.received.wait(10), "no OTLP export arrived"
    ours = [s for s in received.spans if s[2] == "/swarm.ticketing.v1.TicketingService/ListProjects"]
    assert ours, received.spans
    service, exported_trace, _ = ours[0]
    assert service == "ticketing"
    assert exported_trace.hex() == trace_id


def test_json_log_lines_carry_trace_and_span_ids(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("ticketing", "INFO")
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("work") as span:
            logging.getLogger("swarm.test").info("claimed", extra={"ticket_id": "t-1"})
        logging.getLogger("swarm.test").info("outside any span")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    inside, outside = (json.loads(line) for line in capsys.readouterr().err.strip().splitlines())
    ctx = span.get_span_context()
    assert inside["message"] == "claimed" and inside["ticket_id"] == "t-1"
    assert inside["trace_id"] == format(ctx.trace_id, "032x")
    assert inside["span_id"] == format(ctx.span_id, "016x")
    assert inside["service"] == "ticketing" and inside["level"] == "INFO"
    assert "trace_id" not in outside
