"""REST resources for traces and LLM usage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from google.protobuf import json_format
from pydantic import BaseModel

from swarm.telemetry.v1 import telemetry_pb2 as tpb
from swarm_gateway.enums import SPAN_KIND, SPAN_STATUS

GroupBy = Literal["project", "ticket", "agent_type", "model", "day", "month"]


def _dt(ts: Any) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


class SpanEventPublic(BaseModel):
    name: str
    time: datetime
    attributes: dict[str, Any]


class SpanPublic(BaseModel):
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    status: str
    status_message: str | None
    service_name: str
    start_time: datetime
    end_time: datetime
    duration_ms: float
    depth: int
    share_of_total: float
    agent_id: str | None
    attributes: dict[str, Any]
    events: list[SpanEventPublic]

    @classmethod
    def from_proto(cls, s: tpb.Span) -> SpanPublic:
        return cls(
            trace_id=s.trace_id,
            span_id=s.span_id,
            parent_span_id=s.parent_span_id or None,
            name=s.name,
            kind=SPAN_KIND.name(s.kind),
            status=SPAN_STATUS.name(s.status),
            status_message=s.status_message or None,
            service_name=s.service_name,
            start_time=_dt(s.start_time),
            end_time=_dt(s.end_time),
            duration_ms=s.duration.ToNanoseconds() / 1e6,
            depth=s.depth,
            share_of_total=s.share_of_total,
            agent_id=s.agent_id or None,
            attributes=json_format.MessageToDict(s.attributes),
            events=[
                SpanEventPublic(
                    name=e.name, time=_dt(e.time), attributes=json_format.MessageToDict(e.attributes)
                )
                for e in s.events
            ],
        )


class TicketTracePublic(BaseModel):
    ticket_id: str
    trace_ids: list[str]
    start_time: datetime
    end_time: datetime
    duration_ms: float
    # Depth-first: each span follows its parent; `depth` is the indentation.
    spans: list[SpanPublic]


class UsageTotalsPublic(BaseModel):
    request_count: int
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cost_usd: float
    cost_usd_micros: int
    unknown_model_count: int

    @classmethod
    def from_proto(cls, t: tpb.UsageTotals) -> UsageTotalsPublic:
        return cls(
            request_count=t.request_count,
            input_tokens=t.input_tokens,
            output_tokens=t.output_tokens,
            cache_creation_input_tokens=t.cache_creation_input_tokens,
            cache_read_input_tokens=t.cache_read_input_tokens,
            cost_usd=t.cost_usd_micros / 1e6,
            cost_usd_micros=t.cost_usd_micros,
            unknown_model_count=t.unknown_model_count,
        )


class UsageRowPublic(BaseModel):
    key: str
    totals: UsageTotalsPublic
    share_of_cost: float


class UsagePagePublic(BaseModel):
    group_by: GroupBy
    rows: list[UsageRowPublic]
    total: UsageTotalsPublic
    next_page_token: str
