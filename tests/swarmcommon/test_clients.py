"""The shared client channel: default deadlines, SwarmError instead of RpcError,
extra metadata, cancellable streams, large messages; and one typed client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from swarm.quota.v1 import quota_pb2 as qpb
from swarmcommon.authz import PUBLIC
from swarmcommon.clients import QuotaClient, ServiceChannel
from swarmcommon.errors import NotFound, QuotaExceeded, SwarmError
from swarmcommon.grpcserver import GrpcService, ServerHandle, start_server
from swarmcommon.security import ServerSecurity
from tests.support.harness import BACKENDS, QuotaHarness
from tests.support.waiting import eventually

SERVICE = "test.Probe"

INSECURE_DEV = ServerSecurity("swarm.local", None)


class Probe:
    """What the server saw, for the assertions."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.stream_cancelled = threading.Event()


def _probe_service(probe: Probe) -> GrpcService:
    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(float(request.decode() or "0"))
        return b"late"

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        probe.metadata.append(dict(context.invocation_metadata()))
        return request

    def quota(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise QuotaExceeded(
            "vms",
            8,
            8,
            datetime(2030, 1, 1, tzinfo=UTC),
            "VM limit reached (8/8).",
            retry_after=timedelta(seconds=42),
        )

    def missing(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise NotFound("widget 42 not found", reason="WIDGET_NOT_FOUND", widget="42")

    def ticks(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        probe.metadata.append(dict(context.invocation_metadata()))
        context.add_callback(probe.stream_cancelled.set)
        if request == b"fail":
            raise NotFound("stream source gone")
        while context.is_active():
            yield b"tick"
            time.sleep(0.02)

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Quota": grpc.unary_unary_rpc_method_handler(quota),
            "Missing": grpc.unary_unary_rpc_method_handler(missing),
            "Ticks": grpc.unary_stream_rpc_method_handler(ticks),
        },
    )
    return GrpcService(
        SERVICE,
        lambda s: s.add_generic_rpc_handlers((handler,)),
        domain="swarm.test",
        access=dict.fromkeys(["Slow", "Echo", "Quota", "Missing", "Ticks"], PUBLIC),
    )


@pytest.fixture
def probe() -> Iterator[tuple[Probe, ServerHandle]]:
    seen = Probe()
    handle = start_server(
        [_probe_service(seen)], listen_address="127.0.0.1:0", security=INSECURE_DEV, max_workers=8
    )
    yield seen, handle
    handle.stop(0)


def _unary(ch: ServiceChannel, method: str) -> grpc.UnaryUnaryMultiCallable:
    return ch.unary.unary_unary(f"/{SERVICE}/{method}")


def test_a_call_without_a_deadline_gets_the_default_one(probe: tuple[Probe, ServerHandle]) -> None:
    ch = ServiceChannel(f"127.0.0.1:{probe[1].port}", default_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(SwarmError) as info:
        _unary(ch, "Slow")(b"5")
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3
    assert _unary(ch, "Slow")(b"0.5", timeout=3) == b"late"  # an explicit deadline wins
    ch.close()


def test_errors_arrive_as_swarm_errors_with_their_details(probe: tuple[Probe, ServerHandle]) -> None:
    ch = ServiceChannel(f"127.0.0.1:{probe[1].port}")
    with pytest.raises(SwarmError) as missing:
        _unary(ch, "Missing")(b"")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert missing.value.message == "widget 42 not found"
    assert missing.value.reason == "WIDGET_NOT_FOUND"
    assert missing.value.metadata["widget"] == "42"
    with pytest.raises(QuotaExceeded) as quota:
        _unary(ch, "Quota")(b"")
    assert (quota.value.resource, quota.value.current, quota.value.limit) == ("vms", 8, 8)
    assert quota.value.resets_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert quota.value.retry_after == timedelta(seconds=42)
    # futures convert too
    future = _unary(ch, "Missing").future(b"")
    assert isinstance(future.exception(), SwarmError)
    with pytest.raises(SwarmError):
        future.result()
    ch.close()


def test_an_unreachable_peer_is_unavailable_not_a_hang() -> None:
    ch = ServiceChannel("127.0.0.1:1", default_timeout=2)
    with pytest.raises(SwarmError) as info:
        _unary(ch, "Echo")(b"x")
    assert info.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert ch.health(timeout=1) in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    ch.close()


def test_metadata_and_trace_context_travel_with_every_call(
    probe: tuple[Probe, ServerHandle], spans: InMemorySpanExporter
) -> None:
    seen, handle = probe
    ch = ServiceChannel(f"127.0.0.1:{handle.port}", metadata=lambda: [("x-swarm-test", "yes")])
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("caller") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        assert _unary(ch, "Echo")(b"hi") == b"hi"
        stream = ch.streaming.unary_stream(f"/{SERVICE}/Ticks")(b"")
        next(stream)
        stream.cancel()
    unary_md, stream_md = seen.metadata
    assert unary_md["x-swarm-test"] == stream_md["x-swarm-test"] == "yes"
    assert trace_id in unary_md["traceparent"] and trace_id in stream_md["traceparent"]
    ch.close()


def test_a_stream_stays_cancellable_and_its_errors_convert(probe: tuple[Probe, ServerHandle]) -> None:
    seen, handle = probe
    ch = ServiceChannel(f"127.0.0.1:{handle.port}", default_timeout=0.5)
    ticks = ch.streaming.unary_stream(f"/{SERVICE}/Ticks")
    stream = ticks(b"", timeout=60)
    assert next(stream) == b"tick"
    time.sleep(0.6)  # longer than the default deadline: an explicit one was given
    assert next(stream) == b"tick"
    stream.cancel()
    eventually(seen.stream_cancelled.is_set, timeout=5, what="server saw the cancel")
    with pytest.raises(SwarmError) as info:
        list(ticks(b"fail"))
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    ch.close()


def test_messages_larger_than_grpcs_default_4_mib_go_through(probe: tuple[Probe, ServerHandle]) -> None:
    ch = ServiceChannel(f"127.0.0.1:{probe[1].port}")
    big = b"x" * (12 * 1024 * 1024)
    assert _unary(ch, "Echo")(big, timeout=30) == big
    ch.close()


@BACKENDS
def test_the_quota_client_admits_and_refuses_with_typed_errors(quota: QuotaHarness) -> None:
    quota.stub.CreateTenant(
        qpb.CreateTenantRequest(
            tenant_id="acme",
            plan=qpb.PLAN_FREE,
            overrides=[qpb.QuotaOverride(resource=qpb.RESOURCE_VMS, limit=1)],
        )
    )
    with QuotaClient(quota.target) as client:
        assert client.health() == "SERVING"
        reservation = client.reserve_vm("acme", owner="vmhost/agents/a1", request_id="spawn-a1")
        assert client.reserve_vm("acme", owner="vmhost/agents/a1", request_id="spawn-a1") == reservation
        with pytest.raises(QuotaExceeded) as refused:
            client.reserve_vm("acme", owner="vmhost/agents/a2", request_id="spawn-a2")
        assert (refused.value.resource, refused.value.current, refused.value.limit) == ("vms", 1, 1)
        assert client.release("acme", reservation) is True
        assert client.release("acme", reservation) is False
        assert client.limit("acme", qpb.RESOURCE_VMS) == 1
        with pytest.raises(SwarmError) as bad:
            client.consume("acme", qpb.RESOURCE_TICKETS_PER_DAY, -1, "neg")
        assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
