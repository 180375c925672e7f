"""A ticket's trace (seed §8) and LLM usage and cost (seed §6), backed by the
telemetry service; tenant-scoped like every route."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse

from swarm.telemetry.v1 import telemetry_pb2 as tpb
from swarm_gateway.deps import BackendsDep, CurrentCaller, Paging
from swarm_gateway.enums import USAGE_GROUP_BY
from swarm_gateway.errors import COMMON_ERRORS
from swarm_gateway.models import UUID_PATTERN, to_timestamp
from swarm_gateway.telemetry_models import (
    GroupBy,
    SpanPublic,
    TicketTracePublic,
    UsagePagePublic,
    UsageRowPublic,
    UsageTotalsPublic,
)
from swarm_gateway.webhook_models import Timestamp
from swarmcommon.waterfall import render_waterfall

router = APIRouter(prefix="/api", tags=["telemetry"], responses=COMMON_ERRORS)

TicketId = Annotated[str, Path(pattern=UUID_PATTERN)]


@router.get(
    "/tickets/{ticket_id}/trace",
    response_model=TicketTracePublic,
    responses={200: {"content": {"text/plain": {}}, "description": "The trace, or its waterfall as text"}},
)
def get_ticket_trace(
    ticket_id: TicketId,
    caller: CurrentCaller,
    b: BackendsDep,
    format: Annotated[str, Query(pattern="^(json|text)$", description="text: the waterfall")] = "json",
) -> TicketTracePublic | PlainTextResponse:
    """Every span of the ticket as a tree, with durations and share of the total."""
    reply = b.telemetry.stub.GetTicketTrace(
        tpb.GetTicketTraceRequest(tenant_id=caller.tenant_id, ticket_id=ticket_id)
    )
    if format == "text":
        return PlainTextResponse(render_waterfall(reply) + "\n")
    return TicketTracePublic(
        ticket_id=reply.ticket_id,
        trace_ids=list(reply.trace_ids),
        start_time=reply.start_time.ToDatetime(tzinfo=UTC),
        end_time=reply.end_time.ToDatetime(tzinfo=UTC),
        duration_ms=reply.total_duration.ToNanoseconds() / 1e6,
        spans=[SpanPublic.from_proto(s) for s in reply.spans],
    )


@router.get("/usage", response_model=UsagePagePublic)
def get_usage_summary(
    caller: CurrentCaller,
    b: BackendsDep,
    page: Paging,
    group_by: GroupBy = "project",
    since: Timestamp | None = None,
    until: Timestamp | None = None,
    project_id: Annotated[str | None, Query(pattern=UUID_PATTERN)] = None,
) -> UsagePagePublic:
    """LLM tokens and cost grouped by one dimension; the range defaults to this
    UTC month so far (the dashboard's "Cost This Month")."""
    reply = b.telemetry.stub.GetUsageSummary(
        tpb.GetUsageSummaryRequest(
            tenant_id=caller.tenant_id,
            group_by=USAGE_GROUP_BY.number(group_by),  # type: ignore[arg-type]
            start_time=to_timestamp(since) if since else None,
            end_time=to_timestamp(until) if until else None,
            project_id=project_id or "",
            page_size=page.size,
            page_token=page.token,
        )
    )
    return UsagePagePublic(
        group_by=group_by,
        rows=[
            UsageRowPublic(
                key=r.key, totals=UsageTotalsPublic.from_proto(r.totals), share_of_cost=r.share_of_cost
            )
            for r in reply.rows
        ],
        total=UsageTotalsPublic.from_proto(reply.total),
        next_page_token=reply.next_page_token,
    )
