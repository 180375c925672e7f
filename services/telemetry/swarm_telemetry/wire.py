"""Protobuf <-> domain for telemetry, with every check on caller input:
TelemetryService's messages, and OTLP's ExportTraceServiceRequest (whose
spans are checked one by one, so a bad span is refused on its own).

Raw protos stop here: the servicer hands domain objects to the stores and
the ledger, and gets domain objects back.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from swarm.telemetry.v1 import telemetry_pb2 as pb
from swarm_telemetry.domain import (
    AGENT_KEY,
    MAX_NAME,
    MAX_SERVICE_NAME,
    MAX_STATUS_MESSAGE,
    MAX_TOKENS,
    SERVICE_NAME_KEY,
    TENANT_KEY,
    TICKET_KEY,
    Budget,
    IntakeResult,
    Rejection,
    RequestType,
    Span,
    SpanEvent,
    SpanKind,
    SpanQuery,
    SpanStatus,
    SummaryQuery,
    TicketTrace,
    Tokens,
    Totals,
    UsageGroup,
    UsageRecord,
    UsageRequest,
    UsageSummary,
    check_span,
    display_text,
    owner_id,
    rejection_message,
)
from swarmcommon import validation as v
from swarmcommon.enums import EnumCodec
from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import page_size
from swarmcommon.protos import timestamp

KIND = EnumCodec(pb.SpanKind, SpanKind)
STATUS = EnumCodec(pb.SpanStatus, SpanStatus)
GROUP_BY = EnumCodec(pb.UsageGroupBy, UsageGroup)
# OTLP's own enums: the same members, OTLP's numbers.
OTLP_KIND = EnumCodec(trace_pb2.Span.SpanKind, SpanKind)
OTLP_STATUS = EnumCodec(trace_pb2.Status.StatusCode, SpanStatus, prefix="STATUS_CODE_")

HEX32 = re.compile(r"^[0-9a-f]{32}$")

# -- OTLP in -----------------------------------------------------------------------------------


def _value(v: common_pb2.AnyValue) -> Any:
    """An OTLP AnyValue as plain JSON-able Python."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _otlp_id(field: str, raw: bytes, size: int) -> str:
    if len(raw) != size:
        raise InvalidArgument(field, f"must be {size} bytes (got {len(raw)})")
    if not any(raw):
        raise InvalidArgument(field, "must not be all zeros")
    return raw.hex()


def span_from_otlp(
    span: trace_pb2.Span, resource: dict[str, Any], owner: dict[str, str] | None = None
) -> Span:
    """One OTLP span as ours; InvalidArgument names what is wrong with it.
    `owner`: the `swarm.*` ids of the credential that sent it (an agent's
    tenant and id), which win over whatever the span says."""
    merged = {**resource, **_attributes(span.attributes), **(owner or {})}
    service = resource.get(SERVICE_NAME_KEY)
    return Span(
        trace_id=_otlp_id("trace_id", span.trace_id, 16),
        span_id=_otlp_id("span_id", span.span_id, 8),
        parent_span_id=_otlp_id("parent_span_id", span.parent_span_id, 8) if span.parent_span_id else "",
        name=display_text("name", span.name, MAX_NAME) or "(unnamed)",
        kind=OTLP_KIND.from_proto("kind", span.kind),
        status=OTLP_STATUS.from_proto("status.code", span.status.code),
        status_message=display_text("status.message", span.status.message, MAX_STATUS_MESSAGE),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        attributes=merged,
        events=[
            SpanEvent(e.name[:MAX_NAME], e.time_unix_nano, _attributes(e.attributes)) for e in span.events
        ],
        service_name=display_text(
            f"resource.attributes.{SERVICE_NAME_KEY}",
            "" if service is None else str(service),
            MAX_SERVICE_NAME,
        ),
        tenant_id=owner_id(merged, TENANT_KEY),
        ticket_id=owner_id(merged, TICKET_KEY),
        agent_id=owner_id(merged, AGENT_KEY),
    )


def spans_from_export(
    request: otlp.ExportTraceServiceRequest, owner: dict[str, str] | None = None
) -> IntakeResult:
    """Every span of an export, checked on its own (OTLP partial success).
    With `owner` (an agent's export), every span is that agent's tenant's."""
    result = IntakeResult()
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                try:
                    ours = span_from_otlp(span, resource, owner)
                    check_span(ours)
                except InvalidArgument as exc:
                    result.rejected.append(Rejection(span.trace_id.hex(), span.span_id.hex(), exc.message))
                    continue
                result.accepted.append(ours)
    return result


def export_response(result: IntakeResult) -> otlp.ExportTraceServiceResponse:
    response = otlp.ExportTraceServiceResponse()
    if result.rejected:
        response.partial_success.rejected_spans = len(result.rejected)
        response.partial_success.error_message = rejection_message(result.rejected, result.total)
    return response


# -- spans out ---------------------------------------------------------------------------------


def _ns_timestamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def _ns_duration(ns: int) -> Duration:
    return Duration(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    json_format.ParseDict(data, out)
    return out


def span_to_proto(s: Span, depth: int = 0, share_of_total: float = 0.0) -> pb.Span:
    return pb.Span(
        trace_id=s.trace_id,
        span_id=s.span_id,
        parent_span_id=s.parent_span_id,
        name=s.name,
        kind=KIND.to_proto(s.kind),  # type: ignore[arg-type]
        status=STATUS.to_proto(s.status),  # type: ignore[arg-type]
        status_message=s.status_message,
        start_time=_ns_timestamp(s.start_ns),
        end_time=_ns_timestamp(s.end_ns),
        duration=_ns_duration(s.duration_ns),
        depth=depth,
        share_of_total=share_of_total,
        attributes=_struct(s.attributes),
        events=[
            pb.SpanEvent(name=e.name, time=_ns_timestamp(e.time_ns), attributes=_struct(e.attributes))
            for e in s.events
        ],
        service_name=s.service_name,
        tenant_id=s.tenant_id,
        ticket_id=s.ticket_id,
        agent_id=s.agent_id,
    )


def ticket_trace_to_proto(trace: TicketTrace, cost: Totals) -> pb.GetTicketTraceResponse:
    return pb.GetTicketTraceResponse(
        llm_call_count=cost.request_count,
        cost_usd_micros=cost.cost_usd_micros,
        ticket_id=trace.ticket_id,
        trace_ids=trace.trace_ids,
        start_time=_ns_timestamp(trace.start_ns),
        end_time=_ns_timestamp(trace.end_ns),
        total_duration=_ns_duration(trace.end_ns - trace.start_ns),
        spans=[span_to_proto(t.span, t.depth, t.share_of_total) for t in trace.spans],
    )


def _optional(field: str, value: str, limit: int = 64) -> str | None:
    return v.bounded_text(field, value, limit) or None


def span_query_from_proto(request: pb.ListSpansRequest) -> SpanQuery:
    if request.trace_id and not HEX32.match(request.trace_id):
        raise InvalidArgument("trace_id", "must be 32 lower-case hex characters")
    min_duration = request.min_duration.ToNanoseconds() if request.HasField("min_duration") else None
    if min_duration is not None and min_duration < 0:
        raise InvalidArgument("min_duration", "must not be negative")
    return SpanQuery(
        tenant_id=v.name_id("tenant_id", request.tenant_id),
        trace_id=request.trace_id or None,
        ticket_id=_optional("ticket_id", request.ticket_id),
        agent_id=_optional("agent_id", request.agent_id, 128),
        name=_optional("name", request.name, MAX_NAME),
        status=STATUS.from_proto("status", request.status),
        min_duration_ns=min_duration,
        start_ns=request.start_time.ToNanoseconds() if request.HasField("start_time") else None,
        end_ns=request.end_time.ToNanoseconds() if request.HasField("end_time") else None,
        page_size=page_size(request.page_size),
        page_token=request.page_token,
    )


# -- the cost ledger ---------------------------------------------------------------------------


def _tokens(field: str, value: int) -> int:
    if not 0 <= value <= MAX_TOKENS:
        raise InvalidArgument(field, f"must be between 0 and {MAX_TOKENS} (got {value})")
    return value


def _request_type(value: str) -> RequestType:
    try:
        return RequestType(value or RequestType.OTHER)
    except ValueError:
        allowed = ", ".join(t.value for t in RequestType)
        raise InvalidArgument("request_type", f"must be one of {allowed} (got {value[:64]!r})") from None


def _time(ts: Timestamp) -> datetime:
    value: datetime = ts.ToDatetime(tzinfo=UTC)
    return value


def usage_request_from_proto(request: pb.RecordUsageRequest, tenant_id: str, agent_id: str) -> UsageRequest:
    """`tenant_id`, `agent_id`: the request's, or an agent caller's own."""
    return UsageRequest(
        request_id=v.required_text("request_id", request.request_id, 200),
        tenant_id=v.name_id("tenant_id", tenant_id),
        project_id=v.bounded_text("project_id", request.project_id, 64),
        ticket_id=v.bounded_text("ticket_id", request.ticket_id, 64),
        agent_id=v.bounded_text("agent_id", agent_id, 128),
        request_type=_request_type(request.request_type),
        provider=v.required_text("provider", request.provider or "anthropic", 32),
        model=v.required_text("model", request.model, 128),
        tokens=Tokens(
            input_tokens=_tokens("input_tokens", request.input_tokens),
            output_tokens=_tokens("output_tokens", request.output_tokens),
            cache_creation_input_tokens=_tokens(
                "cache_creation_input_tokens", request.cache_creation_input_tokens
            ),
            cache_read_input_tokens=_tokens("cache_read_input_tokens", request.cache_read_input_tokens),
        ),
        usage_at=_time(request.usage_time) if request.HasField("usage_time") else None,
    )


def usage_record_to_proto(r: UsageRecord) -> pb.UsageRecord:
    return pb.UsageRecord(
        id=r.id,
        request_id=r.request_id,
        tenant_id=r.tenant_id,
        project_id=r.project_id,
        ticket_id=r.ticket_id,
        agent_id=r.agent_id,
        request_type=r.request_type.value,
        provider=r.provider,
        model=r.model,
        input_tokens=r.tokens.input_tokens,
        output_tokens=r.tokens.output_tokens,
        cache_creation_input_tokens=r.tokens.cache_creation_input_tokens,
        cache_read_input_tokens=r.tokens.cache_read_input_tokens,
        cost_usd_micros=r.cost_usd_micros,
        price_version=r.price_version,
        unknown_model=r.unknown_model,
        usage_time=timestamp(r.usage_at),
    )


def summary_query_from_proto(request: pb.GetUsageSummaryRequest) -> SummaryQuery:
    group = GROUP_BY.from_proto("group_by", request.group_by)
    if group is None:
        raise InvalidArgument("group_by", "name a grouping: PROJECT, TICKET, AGENT_TYPE, MODEL, DAY or MONTH")
    return SummaryQuery(
        tenant_id=v.name_id("tenant_id", request.tenant_id),
        group=group,
        start=_time(request.start_time) if request.HasField("start_time") else None,
        end=_time(request.end_time) if request.HasField("end_time") else None,
        project_id=_optional("project_id", request.project_id),
        page_size=page_size(request.page_size),
        page_token=request.page_token,
    )


def _totals_to_proto(t: Totals) -> pb.UsageTotals:
    return pb.UsageTotals(
        request_count=t.request_count,
        input_tokens=t.input_tokens,
        output_tokens=t.output_tokens,
        cache_creation_input_tokens=t.cache_creation_input_tokens,
        cache_read_input_tokens=t.cache_read_input_tokens,
        cost_usd_micros=t.cost_usd_micros,
        unknown_model_count=t.unknown_model_count,
    )


def summary_to_proto(summary: UsageSummary) -> pb.GetUsageSummaryResponse:
    return pb.GetUsageSummaryResponse(
        rows=[
            pb.UsageSummaryRow(key=r.key, totals=_totals_to_proto(r.totals), share_of_cost=r.share_of_cost)
            for r in summary.rows
        ],
        total=_totals_to_proto(summary.total),
        next_page_token=summary.next_page_token,
    )


def estimated_cost(request: pb.CheckBudgetRequest) -> int:
    if request.estimated_cost_usd_micros < 0:
        raise InvalidArgument("estimated_cost_usd_micros", "must not be negative")
    return int(request.estimated_cost_usd_micros)


def budget_to_proto(b: Budget) -> pb.CheckBudgetResponse:
    return pb.CheckBudgetResponse(
        allowed=b.allowed,
        spent_usd_micros=b.spent,
        limit_usd_micros=b.limit or 0,
        remaining_usd_micros=b.remaining,
        unlimited=b.limit is None,
        reset_time=timestamp(b.reset_at),
    )
