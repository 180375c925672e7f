"""OTLP intake: every span is checked before it is stored. A bad span is
rejected on its own (OTLP partial success naming the problem); the good spans
of the same export are stored, on both backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from swarm.telemetry.v1 import telemetry_pb2 as pb
from tests.support.harness import BACKENDS, TelemetryHarness
from tests.support.status import raises_status
from tests.telemetry.helpers import span_rows

pytestmark = BACKENDS

NOW = 1_700_000_000_000_000_000
TOO_BIG = 2**63  # one past the largest signed 64-bit value a database column holds
Mutation = Callable[[trace_pb2.Span], None]


def _attr(key: str, value: str) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def _span(tenant: str, ticket: str, name: str) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        name=name,
        kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=NOW,
        end_time_unix_nano=NOW + 1_000_000,
        attributes=[_attr("swarm.tenant_id", tenant), _attr("swarm.ticket_id", ticket)],
    )


def _export(h: TelemetryHarness, *spans: trace_pb2.Span, **resource: str) -> otlp.ExportTraceServiceResponse:
    request = otlp.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(attributes=[_attr(k, v) for k, v in resource.items()]),
                scope_spans=[trace_pb2.ScopeSpans(spans=list(spans))],
            )
        ]
    )
    stub = otlp_grpc.TraceServiceStub(h.channel)  # type: ignore[no-untyped-call]
    reply: otlp.ExportTraceServiceResponse = stub.Export(request, timeout=30)
    return reply


def _stored_names(h: TelemetryHarness, tenant: str) -> list[str]:
    return sorted(
        s.name for s in h.stub.ListSpans(pb.ListSpansRequest(tenant_id=tenant, page_size=100)).spans
    )


def _set(**fields: object) -> Mutation:
    def mutate(span: trace_pb2.Span) -> None:
        for key, value in fields.items():
            setattr(span, key, value)

    return mutate


def _status(code: int) -> Mutation:
    def mutate(span: trace_pb2.Span) -> None:
        span.status.code = code  # type: ignore[assignment]

    return mutate


def _status_message(message: str) -> Mutation:
    def mutate(span: trace_pb2.Span) -> None:
        span.status.message = message

    return mutate


def _add_attr(key: str, value: str) -> Mutation:
    return lambda span: span.attributes.append(_attr(key, value))


def _event_at(time_ns: int) -> Mutation:
    return lambda span: span.events.append(trace_pb2.Span.Event(name="e", time_unix_nano=time_ns))


def _many_events(count: int, size: int) -> Mutation:
    def mutate(span: trace_pb2.Span) -> None:
        for i in range(count):
            span.events.append(
                trace_pb2.Span.Event(name=f"e{i}", time_unix_nano=NOW, attributes=[_attr("blob", "x" * size)])
            )

    return mutate


# (id, how the bad span differs from a good one, a word its rejection message must contain)
BAD_SPANS: list[tuple[str, Mutation, str]] = [
    ("kind-out-of-range", _set(kind=70000), "kind: unknown value 70000"),
    ("kind-negative", _set(kind=-1), "kind: unknown value -1"),
    ("status-out-of-range", _status(70000), "status.code: unknown value 70000"),
    ("status-negative", _status(-3), "status.code: unknown value -3"),
    ("end-past-int64", _set(end_time_unix_nano=TOO_BIG), "end_time_unix_nano"),
    ("end-max-uint64", _set(end_time_unix_nano=2**64 - 1), "end_time_unix_nano"),
    (
        "start-past-int64",
        _set(start_time_unix_nano=TOO_BIG, end_time_unix_nano=TOO_BIG + 1),
        "start_time_unix_nano",
    ),
    (
        "start-after-end",
        _set(start_time_unix_nano=NOW + 5, end_time_unix_nano=NOW),
        "end_time_unix_nano: is before start_time_unix_nano",
    ),
    ("no-start", _set(start_time_unix_nano=0, end_time_unix_nano=0), "start_time_unix_nano"),
    ("trace-id-length", _set(trace_id=b"short"), "trace_id"),
    ("trace-id-zero", _set(trace_id=bytes(16)), "trace_id"),
    ("span-id-zero", _set(span_id=bytes(8)), "span_id"),
    ("parent-id-length", _set(parent_span_id=b"abc"), "parent_span_id"),
    ("name-nul", _set(name="git\x00push"), "name: must not contain NUL"),
    ("status-message-nul", _status_message("broke\x00here"), "status.message"),
    ("attributes-absurd-size", _add_attr("blob", "x" * 100_000), "attributes"),
    ("agent-id-too-long", _add_attr("swarm.agent_id", "a" * 500), "swarm.agent_id"),
    ("agent-id-nul", _add_attr("swarm.agent_id", "a\x00b"), "swarm.agent_id"),
    ("ticket-id-too-long", _add_attr("swarm.ticket_id", "t" * 65), "swarm.ticket_id"),
    ("tenant-id-too-long", _add_attr("swarm.tenant_id", "t" * 129), "swarm.tenant_id"),
    ("event-time-past-int64", _event_at(TOO_BIG), "events"),
    ("events-absurd-size", _many_events(40, 10_000), "events"),
]


def test_one_bad_span_is_rejected_alone_and_its_batch_is_stored(telemetry: TelemetryHarness) -> None:
    """The table, one export per row (each under its own tenant, so one
    server serves the whole table)."""
    for case, spoil, named in BAD_SPANS:
        tenant, ticket = f"t-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
        bad = _span(tenant, ticket, "bad")
        spoil(bad)
        reply = _export(telemetry, _span(tenant, ticket, "before"), bad, _span(tenant, ticket, "after"))
        message = reply.partial_success.error_message
        assert reply.partial_success.rejected_spans == 1, (case, reply)
        assert message.startswith("1 of 3 spans rejected") and named in message, (case, message)
        assert _stored_names(telemetry, tenant) == ["after", "before"], case
        trace = telemetry.stub.GetTicketTrace(pb.GetTicketTraceRequest(tenant_id=tenant, ticket_id=ticket))
        assert sorted(s.name for s in trace.spans) == ["after", "before"], case


def test_every_bad_span_of_one_export_is_counted_and_named(telemetry: TelemetryHarness) -> None:
    tenant, ticket = f"t-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    bad = []
    for _, spoil, _ in BAD_SPANS:
        span = _span(tenant, ticket, "bad")
        spoil(span)
        bad.append(span)
    reply = _export(telemetry, _span(tenant, ticket, "good"), *bad)
    assert reply.partial_success.rejected_spans == len(BAD_SPANS)
    message = reply.partial_success.error_message
    assert message.startswith(f"{len(BAD_SPANS)} of {len(BAD_SPANS) + 1} spans rejected"), message
    assert "kind" in message and len(message) <= 2048
    assert _stored_names(telemetry, tenant) == ["good"]


def test_a_bad_resource_rejects_its_spans_and_not_another_resources(telemetry: TelemetryHarness) -> None:
    tenant, ticket = f"t-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    bad = _export(telemetry, _span(tenant, ticket, "bad-resource"), **{"service.name": "svc\x00"})
    assert bad.partial_success.rejected_spans == 1 and "service.name" in bad.partial_success.error_message
    good = _export(telemetry, _span(tenant, ticket, "good"), **{"service.name": "svc"})
    assert not good.HasField("partial_success") or good.partial_success.rejected_spans == 0
    assert _stored_names(telemetry, tenant) == ["good"]


def test_a_clean_export_reports_no_partial_success(telemetry: TelemetryHarness) -> None:
    tenant, ticket = f"t-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    reply = _export(telemetry, _span(tenant, ticket, "a"), _span(tenant, ticket, "b"))
    assert reply.partial_success.rejected_spans == 0 and reply.partial_success.error_message == ""
    with raises_status(grpc.StatusCode.NOT_FOUND):
        telemetry.stub.GetTicketTrace(pb.GetTicketTraceRequest(tenant_id="other", ticket_id=ticket))


def test_malformed_spans_are_a_partial_success_and_resends_are_stored_once(
    telemetry: TelemetryHarness,
) -> None:
    ticket = str(uuid.uuid4())
    good = trace_pb2.Span(
        trace_id=bytes.fromhex("11" * 16),
        span_id=bytes.fromhex("22" * 8),
        name="ok",
        start_time_unix_nano=1,
        end_time_unix_nano=2,
    )
    good.attributes.add(key="swarm.tenant_id").value.string_value = "acme"
    good.attributes.add(key="swarm.ticket_id").value.string_value = ticket
    bad = trace_pb2.Span(trace_id=b"short", span_id=b"x", name="bad")
    request = otlp.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[good, bad])])]
    )
    stub = otlp_grpc.TraceServiceStub(telemetry.channel)  # type: ignore[no-untyped-call]
    reply = stub.Export(request)
    assert reply.partial_success.rejected_spans == 1 and "trace_id" in reply.partial_success.error_message
    stored = span_rows(telemetry)
    again = stub.Export(request)  # the exporter retried: same answer, nothing new written
    assert again == reply
    assert span_rows(telemetry) == stored
    spans = telemetry.stub.GetTicketTrace(pb.GetTicketTraceRequest(tenant_id="acme", ticket_id=ticket)).spans
    assert [s.name for s in spans] == ["ok"]


def test_kind_and_status_survive_the_trip_and_status_filters(telemetry: TelemetryHarness) -> None:
    tenant, ticket = f"t-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    failed = _span(tenant, ticket, "failed")
    failed.kind = trace_pb2.Span.SPAN_KIND_CLIENT
    failed.status.code = trace_pb2.Status.STATUS_CODE_ERROR
    failed.status.message = "upstream said no"
    unset = _span(tenant, ticket, "unset")
    unset.kind = trace_pb2.Span.SPAN_KIND_UNSPECIFIED
    _export(telemetry, failed, unset)
    listed = {s.name: s for s in telemetry.stub.ListSpans(pb.ListSpansRequest(tenant_id=tenant)).spans}
    assert listed["failed"].kind == pb.SPAN_KIND_CLIENT and listed["failed"].status == pb.SPAN_STATUS_ERROR
    assert listed["failed"].status_message == "upstream said no"
    assert listed["unset"].kind == pb.SPAN_KIND_UNSPECIFIED
    assert listed["unset"].status == pb.SPAN_STATUS_UNSPECIFIED
    errors = telemetry.stub.ListSpans(
        pb.ListSpansRequest(tenant_id=tenant, status=pb.SPAN_STATUS_ERROR)
    ).spans
    assert [s.name for s in errors] == ["failed"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "status"):
        telemetry.stub.ListSpans(pb.ListSpansRequest(tenant_id=tenant, status=9))  # type: ignore[arg-type]
