"""Telemetry takes tenant and agent from the agent's token: usage for
another tenant or agent is PERMISSION_DENIED with nothing written, and spans
an agent exports are stored under its token's tenant whatever they claim."""

from __future__ import annotations

import uuid

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from swarm.telemetry.v1 import telemetry_pb2 as pb
from swarmagent.credentials import AgentCredentials, export_spans
from tests.agenttokens.mesh import AgentMesh
from tests.support.pki import bearer
from tests.support.status import error_info, raises_status
from tests.support.waiting import eventually

MODEL = "claude-sonnet-4-5"


def _usage(**kw: object) -> pb.RecordUsageRequest:
    return pb.RecordUsageRequest(request_id=str(uuid.uuid4()), model=MODEL, input_tokens=1000, **kw)  # type: ignore[arg-type]


def test_usage_is_recorded_for_the_tokens_tenant_and_agent(mesh: AgentMesh) -> None:
    me = str(uuid.uuid4())
    stub, md = mesh.agent_telemetry(), bearer(mesh.token(me, "acme"))
    record = stub.RecordUsage(_usage(), metadata=md).record
    assert (record.tenant_id, record.agent_id) == ("acme", me)
    assert stub.CheckBudget(pb.CheckBudgetRequest(), metadata=md).allowed


def test_usage_for_another_tenant_or_agent_is_refused_and_nothing_recorded(mesh: AgentMesh) -> None:
    stub, md = mesh.agent_telemetry(), bearer(mesh.token(str(uuid.uuid4()), "acme"))
    before = mesh.snapshot()
    with raises_status(grpc.StatusCode.PERMISSION_DENIED, "'globex'") as caught:
        stub.RecordUsage(_usage(tenant_id="globex"), metadata=md)
    assert error_info(caught[0]).reason == "TENANT_MISMATCH"
    with raises_status(grpc.StatusCode.PERMISSION_DENIED) as caught:
        stub.RecordUsage(_usage(tenant_id="acme", agent_id=str(uuid.uuid4())), metadata=md)
    assert error_info(caught[0]).reason == "AGENT_MISMATCH"
    with raises_status(grpc.StatusCode.PERMISSION_DENIED, "'globex'"):
        stub.CheckBudget(pb.CheckBudgetRequest(tenant_id="globex"), metadata=md)
    assert mesh.snapshot() == before


def _export_claiming(tenant: str, agent: str) -> otlp.ExportTraceServiceRequest:
    def attr(key: str, value: str) -> common_pb2.KeyValue:
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))

    span = trace_pb2.Span(
        trace_id=uuid.uuid4().bytes,
        span_id=uuid.uuid4().bytes[:8],
        name="agent.work",
        start_time_unix_nano=1_000,
        end_time_unix_nano=2_000,
        attributes=[attr("swarm.tenant_id", tenant), attr("swarm.agent_id", agent)],
    )
    resource = resource_pb2.Resource(
        attributes=[attr("service.name", "swarm-agent"), attr("swarm.tenant_id", tenant)]
    )
    return otlp.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(resource=resource, scope_spans=[trace_pb2.ScopeSpans(spans=[span])])
        ]
    )


def _spans(mesh: AgentMesh, tenant: str) -> list[pb.Span]:
    return list(mesh.operator_telemetry().ListSpans(pb.ListSpansRequest(tenant_id=tenant)).spans)


def test_spans_claiming_another_tenant_are_stored_under_the_tokens_tenant(mesh: AgentMesh) -> None:
    me = str(uuid.uuid4())
    exporter = otlp_grpc.TraceServiceStub(mesh.agent_channel("telemetry"))
    reply = exporter.Export(
        _export_claiming("globex", "someone-else"), metadata=bearer(mesh.token(me, "acme"))
    )
    assert not reply.partial_success.rejected_spans
    assert _spans(mesh, "globex") == []
    [stored] = _spans(mesh, "acme")
    assert stored.name == "agent.work"
    attributes = dict(stored.attributes)
    assert attributes["swarm.tenant_id"] == "acme" and attributes["swarm.agent_id"] == me


def test_the_guest_exporter_sends_spans_with_its_current_token(mesh: AgentMesh) -> None:
    """swarmagent's exporter: TLS to the agent port, the token renewed in place."""
    me = str(uuid.uuid4())
    credentials = AgentCredentials(mesh.token(me, "acme"), str(mesh.ca))
    target = f"127.0.0.1:{mesh.telemetry.handle.agent_port}"
    provider = TracerProvider(
        resource=Resource.create({"service.name": "swarm-agent", "swarm.tenant_id": "globex"})
    )
    assert export_spans(provider, target, credentials)
    try:
        provider.get_tracer("test").start_span("first").end()
        assert provider.force_flush()
        credentials.renew(mesh.token(me, "acme"))
        provider.get_tracer("test").start_span("second").end()
        assert provider.force_flush()
        names = eventually(
            lambda: {s.name for s in _spans(mesh, "acme")} == {"first", "second"}, what="spans"
        )
        assert names
        assert _spans(mesh, "globex") == []
    finally:
        provider.shutdown()
