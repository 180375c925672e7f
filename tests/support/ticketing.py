"""Builders for ticketing calls, for any test that works tickets over gRPC."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarm_ticketing.tables import metadata, outbox
from tests.support.harness import TicketingHarness

CODER = pb.AGENT_ROLE_CODER
REVIEWER = pb.AGENT_ROLE_REVIEWER


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


def spec(
    key: str, *, priority: int = 0, depends_on: Sequence[str] = (), stages: Sequence[int] = ()
) -> pb.TicketSpec:
    return pb.TicketSpec(
        key=key, name=f"ticket {key}", priority=priority, depends_on=list(depends_on), stages=list(stages)
    )


def create_project(
    stub: pb_grpc.TicketingServiceStub, tenant_id: str, tickets: Sequence[pb.TicketSpec], name: str = "demo"
) -> pb.CreateProjectResponse:
    return stub.CreateProject(pb.CreateProjectRequest(tenant_id=tenant_id, name=name, tickets=list(tickets)))


def claim(
    stub: pb_grpc.TicketingServiceStub, tenant_id: str, agent: str, *, request_id: str = "", role: int = 0
) -> pb.ClaimTicketResponse:
    return stub.ClaimTicket(
        pb.ClaimTicketRequest(tenant_id=tenant_id, agent_id=agent, request_id=request_id, role=role)
    )


def submit(
    stub: pb_grpc.TicketingServiceStub, tenant_id: str, c: pb.ClaimTicketResponse, result: str = "{}"
) -> pb.SubmitWorkResponse:
    return stub.SubmitWork(
        pb.SubmitWorkRequest(
            tenant_id=tenant_id, ticket_id=c.ticket.id, claim_token=c.lease.claim_token, result_json=result
        )
    )


def fail(
    stub: pb_grpc.TicketingServiceStub, tenant_id: str, c: pb.ClaimTicketResponse, reason: str
) -> pb.ReportFailureResponse:
    return stub.ReportFailure(
        pb.ReportFailureRequest(
            tenant_id=tenant_id, ticket_id=c.ticket.id, claim_token=c.lease.claim_token, reason=reason
        )
    )


def get(stub: pb_grpc.TicketingServiceStub, tenant_id: str, ticket_id: str) -> pb.Ticket:
    return stub.GetTicket(pb.GetTicketRequest(tenant_id=tenant_id, ticket_id=ticket_id)).ticket


def outbox_events(h: TicketingHarness, tenant_id: str) -> list[tuple[str, dict[str, object]]]:
    """(event type, payload) of the tenant's outbox rows, oldest first."""
    with h.app.db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(outbox.c.event_type, outbox.c.payload)
            .where(outbox.c.tenant_id == tenant_id)
            .order_by(outbox.c.id)
        ).all()
    return [(r.event_type, json.loads(r.payload)) for r in rows]


def snapshot(h: TicketingHarness) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every ticketing table, to assert that a call wrote nothing."""
    with h.app.db.engine.connect() as conn:
        return {
            t.name: sorted(map(tuple, conn.execute(sa.select(t)).all()), key=repr)
            for t in metadata.sorted_tables
        }
