"""The shared server bootstrap: health, reflection, error mapping, tracing, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmcommon.authz import PUBLIC
from swarmcommon.errors import NotFound, QuotaExceeded
from swarmcommon.grpcserver import GrpcService, ServerHandle, start_server
from swarmcommon.localproc import free_port, wait_until_serving
from swarmcommon.security import ServerSecurity
from tests.support.harness import TicketingHarness, start_ticketing

REPO = Path(__file__).resolve().parents[2]

INSECURE_DEV = ServerSecurity("swarm.local", None)


def _boom_service() -> GrpcService:
    def quota(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise QuotaExceeded("vms", 8, 8, datetime(2030, 1, 1, tzinfo=UTC), "VM limit reached (8/8).")

    def missing(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise NotFound("widget 42 not found")

    def crash(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise ValueError("secret internal detail")

    handler = grpc.method_handlers_generic_handler(
        "test.Boom",
        {
            "Quota": grpc.unary_unary_rpc_method_handler(quota),
            "Missing": grpc.unary_unary_rpc_method_handler(missing),
            "Crash": grpc.unary_unary_rpc_method_handler(crash),
        },
    )
    return GrpcService(
        "test.Boom",
        lambda s: s.add_generic_rpc_handlers((handler,)),
        domain="swarm.test",
        access=dict.fromkeys(["Quota", "Missing", "Crash"], PUBLIC),
    )


@pytest.fixture
def boom() -> Iterator[tuple[ServerHandle, grpc.Channel]]:
    handle = start_server(
        [_boom_service()], listen_address="127.0.0.1:0", security=INSECURE_DEV, max_workers=4
    )
    ch = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
    yield handle, ch
    ch.close()
    handle.stop(0)


def _call(ch: grpc.Channel, method: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        ch.unary_unary(f"/test.Boom/{method}")(b"")
    return info.value


def test_swarm_errors_become_status_codes_with_error_info(boom: tuple[ServerHandle, grpc.Channel]) -> None:
    _, ch = boom
    err = _call(ch, "Quota")
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == "VM limit reached (8/8)."
    status = rpc_status.from_call(err)
    assert status is not None
    info, failure = error_details_pb2.ErrorInfo(), error_details_pb2.QuotaFailure()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(failure)
    assert info.reason == "QUOTA_EXCEEDED" and info.domain == "swarm.test"
    assert dict(info.metadata) == {
        "resource": "vms",
        "current": "8",
        "limit": "8",
        "resets_at": "2030-01-01T00:00:00Z",
    }
    assert failure.violations[0].subject == "vms"
    assert _call(ch, "Missing").code() == grpc.StatusCode.NOT_FOUND


def test_unexpected_errors_are_internal_without_leaking_details(
    boom: tuple[ServerHandle, grpc.Channel],
) -> None:
    err = _call(boom[1], "Crash")
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (err.details() or "")


def test_health_is_served_and_reflection_is_off_unless_enabled(ticketing: TicketingHarness) -> None:
    health = health_pb2_grpc.HealthStub(ticketing.channel)
    for service in ["", "swarm.ticketing.v1.TicketingService"]:
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(ticketing.channel)
    with pytest.raises(grpc.RpcError) as off:
        list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_is_served_when_enabled(db: str) -> None:
    harness = start_ticketing(db, reflection=True)
    try:
        refl = reflection_pb2_grpc.ServerReflectionStub(harness.channel)
        replies = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in replies for s in r.list_services_response.service}
        assert {"swarm.ticketing.v1.TicketingService", "grpc.health.v1.Health"} <= names
    finally:
        harness.stop()


def test_draining_server_reports_not_serving(ticketing: TicketingHarness) -> None:
    handle = ticketing.app.handle  # ticketing serves on the asyncio server: its health servicer is async
    handle.run(handle.health.enter_graceful_shutdown())
    reply = health_pb2_grpc.HealthStub(ticketing.channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_trace_context_crosses_the_grpc_hop(spans: InMemorySpanExporter, ticketing: TicketingHarness) -> None:
    tracer = trace.get_tracer("test")
    stub = ticketing.stub
    with tracer.start_as_current_span("agent.claim") as root:
        stub.ListProjects(pb.ListProjectsRequest(tenant_id="acme"))
    name = "/swarm.ticketing.v1.TicketingService/ListProjects"
    # The server span ends just after the response is sent: give it a moment.
    deadline = time.monotonic() + 5
    while True:
        by_kind = {sp.kind: sp for sp in spans.get_finished_spans() if sp.name == name}
        if len(by_kind) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    client, server = by_kind[trace.SpanKind.CLIENT], by_kind[trace.SpanKind.SERVER]
    trace_id = root.get_span_context().trace_id
    assert client.context.trace_id == server.context.trace_id == trace_id
    assert client.parent is not None and client.parent.span_id == root.get_span_context().span_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id


@pytest.mark.parametrize("workers", [1, 2])
def test_service_process_drains_on_sigterm_and_logs_json(tmp_path: Path, workers: int) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SWARM_TICKETING_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
        "SWARM_TICKETING_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "SWARM_TICKETING_SHUTDOWN_GRACE_SECONDS": "2",
        "SWARM_TICKETING_WORKERS": str(workers),
    }
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_ticketing"], env=env, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        wait_until_serving(f"127.0.0.1:{port}", proc)  # type: ignore[arg-type]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr is not None
    lines = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    assert messages.count("gRPC server listening") == workers
    assert messages.count("signal received, draining") == workers
    assert messages.count("server stopped") == workers
    listening = {line["process"] for line in lines if line["message"] == "gRPC server listening"}
    assert len(listening) == workers  # distinct processes sharing one port
    assert all(line["service"] == "ticketing" for line in lines)
