"""gRPC adapters: TelemetryService (traces, cost ledger, budgets) and the
standard OTLP TraceService/Export that fills the span store."""

from __future__ import annotations

import logging
import re
from datetime import UTC
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from swarm.telemetry.v1 import telemetry_pb2 as pb
from swarm.telemetry.v1 import telemetry_pb2_grpc as pb_grpc
from swarm_telemetry.otlp import Forwarder, to_rows
from swarm_telemetry.spans import SpanRow, SpanStore
from swarm_telemetry.usage import Totals, UsageInput, UsageLedger
from swarmcommon import validation as v
from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import page_size
from swarmcommon.protos import timestamp

log = logging.getLogger(__name__)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
REQUEST_TYPES = ("coder", "reviewer", "security", "tests", "judge", "clarifier", "decomposer", "other")
GROUP_BY = {
    pb.USAGE_GROUP_BY_PROJECT: "project",
    pb.USAGE_GROUP_BY_TICKET: "ticket",
    pb.USAGE_GROUP_BY_AGENT_TYPE: "agent_type",
    pb.USAGE_GROUP_BY_MODEL: "model",
    pb.USAGE_GROUP_BY_DAY: "day",
    pb.USAGE_GROUP_BY_MONTH: "month",
}
MAX_TOKENS = 10**12


def _ns_timestamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def _ns_duration(ns: int) -> Duration:
    return Duration(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    json_format.ParseDict(data, out)
    return out


def span_to_proto(s: SpanRow) -> pb.Span:
    return pb.Span(
        trace_id=s.trace_id,
        span_id=s.span_id,
        parent_span_id=s.parent_span_id,
        name=s.name,
        kind=s.kind if s.kind in pb.SpanKind.values() else 0,  # type: ignore[arg-type]
        status=s.status if s.status in pb.SpanStatus.values() else 0,  # type: ignore[arg-type]
        status_message=s.status_message,
        start_time=_ns_timestamp(s.start_ns),
        end_time=_ns_timestamp(s.end_ns),
        duration=_ns_duration(s.duration_ns),
        depth=s.depth,
        share_of_total=s.share_of_total,
        attributes=_struct(s.attributes),
        events=[
            pb.SpanEvent(
                name=e["name"], time=_ns_timestamp(int(e["time_ns"])), attributes=_struct(e["attributes"])
            )
            for e in s.events
        ],
        service_name=s.service_name,
        tenant_id=s.tenant_id,
        ticket_id=s.ticket_id,
        agent_id=s.agent_id,
    )


def _totals(t: Totals) -> pb.UsageTotals:
    return pb.UsageTotals(
        request_count=t.request_count,
        input_tokens=t.input_tokens,
        output_tokens=t.output_tokens,
        cache_creation_input_tokens=t.cache_creation_input_tokens,
        cache_read_input_tokens=t.cache_read_input_tokens,
        cost_usd_micros=t.cost_usd_micros,
        unknown_model_count=t.unknown_model_count,
    )


def record_to_proto(r: Any) -> pb.UsageRecord:
    return pb.UsageRecord(
        id=r.id,
        request_id=r.request_id,
        tenant_id=r.tenant_id,
        project_id=r.project_id,
        ticket_id=r.ticket_id,
        agent_id=r.agent_id,
        request_type=r.request_type,
        provider=r.provider,
        model=r.model,
        input_tokens=r.input_tokens,
        output_tokens=r.output_tokens,
        cache_creation_input_tokens=r.cache_creation_input_tokens,
        cache_read_input_tokens=r.cache_read_input_tokens,
        cost_usd_micros=r.cost_usd_micros,
        price_version=r.price_version,
        unknown_model=r.unknown_model,
        usage_time=timestamp(r.usage_at),
    )


def _tokens(field: str, value: int) -> int:
    if not 0 <= value <= MAX_TOKENS:
        raise InvalidArgument(field, f"must be between 0 and {MAX_TOKENS} (got {value})")
    return value


def _optional_id(field: str, value: str, limit: int = 64) -> str:
    return v.bounded_text(field, value, limit)


class TelemetryServicer(pb_grpc.TelemetryServiceServicer):  # type: ignore[misc]
    def __init__(self, spans: SpanStore, ledger: UsageLedger) -> None:
        self.spans = spans
        self.ledger = ledger

    def GetTicketTrace(
        self, request: pb.GetTicketTraceRequest, context: grpc.ServicerContext
    ) -> pb.GetTicketTraceResponse:
        trace = self.spans.ticket_trace(
            v.name_id("tenant_id", request.tenant_id), v.required_text("ticket_id", request.ticket_id, 64)
        )
        return pb.GetTicketTraceResponse(
            ticket_id=trace.ticket_id,
            trace_ids=trace.trace_ids,
            start_time=_ns_timestamp(trace.start_ns),
            end_time=_ns_timestamp(trace.end_ns),
            total_duration=_ns_duration(trace.end_ns - trace.start_ns),
            spans=[span_to_proto(s) for s in trace.spans],
        )

    def ListSpans(self, request: pb.ListSpansRequest, context: grpc.ServicerContext) -> pb.ListSpansResponse:
        if request.trace_id and not HEX32.match(request.trace_id):
            raise InvalidArgument("trace_id", "must be 32 lower-case hex characters")
        if request.status not in pb.SpanStatus.values():
            raise InvalidArgument("status", f"unknown status {request.status}")
        min_duration = request.min_duration.ToNanoseconds() if request.HasField("min_duration") else None
        if min_duration is not None and min_duration < 0:
            raise InvalidArgument("min_duration", "must not be negative")
        page = self.spans.list_spans(
            v.name_id("tenant_id", request.tenant_id),
            trace_id=request.trace_id or None,
            ticket_id=_optional_id("ticket_id", request.ticket_id) or None,
            agent_id=_optional_id("agent_id", request.agent_id, 128) or None,
            name=_optional_id("name", request.name, 256) or None,
            status=request.status or None,
            min_duration_ns=min_duration,
            start_ns=request.start_time.ToNanoseconds() if request.HasField("start_time") else None,
            end_ns=request.end_time.ToNanoseconds() if request.HasField("end_time") else None,
            page_size=page_size(request.page_size),
            page_token=request.page_token,
        )
        return pb.ListSpansResponse(
            spans=[span_to_proto(s) for s in page.items], next_page_token=page.next_page_token
        )

    def RecordUsage(
        self, request: pb.RecordUsageRequest, context: grpc.ServicerContext
    ) -> pb.RecordUsageResponse:
        request_type = request.request_type or "other"
        if request_type not in REQUEST_TYPES:
            raise InvalidArgument("request_type", f"must be one of {', '.join(REQUEST_TYPES)}")
        usage = UsageInput(
            request_id=v.required_text("request_id", request.request_id, 200),
            tenant_id=v.name_id("tenant_id", request.tenant_id),
            project_id=_optional_id("project_id", request.project_id),
            ticket_id=_optional_id("ticket_id", request.ticket_id),
            agent_id=_optional_id("agent_id", request.agent_id, 128),
            request_type=request_type,
            provider=v.required_text("provider", request.provider or "anthropic", 32),
            model=v.required_text("model", request.model, 128),
            input_tokens=_tokens("input_tokens", request.input_tokens),
            output_tokens=_tokens("output_tokens", request.output_tokens),
            cache_creation_input_tokens=_tokens(
                "cache_creation_input_tokens", request.cache_creation_input_tokens
            ),
            cache_read_input_tokens=_tokens("cache_read_input_tokens", request.cache_read_input_tokens),
            usage_at=request.usage_time.ToDatetime(tzinfo=UTC) if request.HasField("usage_time") else None,
        )
        return pb.RecordUsageResponse(record=record_to_proto(self.ledger.record(usage)))

    def GetUsageSummary(
        self, request: pb.GetUsageSummaryRequest, context: grpc.ServicerContext
    ) -> pb.GetUsageSummaryResponse:
        if request.group_by not in GROUP_BY:
            raise InvalidArgument(
                "group_by", "name a grouping: PROJECT, TICKET, AGENT_TYPE, MODEL, DAY or MONTH"
            )
        rows, total, nxt = self.ledger.summary(
            v.name_id("tenant_id", request.tenant_id),
            GROUP_BY[request.group_by],
            request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None,
            request.end_time.ToDatetime(tzinfo=UTC) if request.HasField("end_time") else None,
            _optional_id("project_id", request.project_id) or None,
            page_size(request.page_size),
            request.page_token,
        )
        return pb.GetUsageSummaryResponse(
            rows=[
                pb.UsageSummaryRow(key=r.key, totals=_totals(r.totals), share_of_cost=r.share_of_cost)
                for r in rows
            ],
            total=_totals(total),
            next_page_token=nxt,
        )

    def CheckBudget(
        self, request: pb.CheckBudgetRequest, context: grpc.ServicerContext
    ) -> pb.CheckBudgetResponse:
        if request.estimated_cost_usd_micros < 0:
            raise InvalidArgument("estimated_cost_usd_micros", "must not be negative")
        budget = self.ledger.check_budget(
            v.name_id("tenant_id", request.tenant_id), request.estimated_cost_usd_micros
        )
        return pb.CheckBudgetResponse(
            allowed=budget.allowed,
            spent_usd_micros=budget.spent,
            limit_usd_micros=budget.limit or 0,
            remaining_usd_micros=max((budget.limit or 0) - budget.spent, 0),
            unlimited=budget.limit is None,
            reset_time=timestamp(budget.reset_at),
        )


class OtlpTraceServicer(otlp_grpc.TraceServiceServicer):  # type: ignore[misc]
    """opentelemetry.proto.collector.trace.v1.TraceService: what every stock
    OTLP exporter speaks."""

    def __init__(self, spans: SpanStore, forwarder: Forwarder | None) -> None:
        self.spans = spans
        self.forwarder = forwarder

    def Export(
        self, request: otlp.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> otlp.ExportTraceServiceResponse:
        converted = to_rows(request)
        self.spans.ingest(converted.rows)
        if self.forwarder is not None:
            self.forwarder.submit(request)
        response = otlp.ExportTraceServiceResponse()
        if converted.rejected:
            response.partial_success.rejected_spans = converted.rejected
            response.partial_success.error_message = converted.error
        return response
