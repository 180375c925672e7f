"""Every transition leaves an audit row and, under the seed's event names,
an outbox row committed in the same transaction."""

from __future__ import annotations

import json

import grpc
import sqlalchemy as sa

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing.domain import EventType
from swarm_ticketing.stores import journal
from swarm_ticketing.tables import audit_events, claim_requests, outbox
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import claim, create_project, fail, outbox_events, spec, submit, tenant

pytestmark = BACKENDS


def test_lifecycle_emits_the_seed_event_names_in_order(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("a"), spec("b")]).tickets[0]
    c = claim(ticketing.stub, t, "agent-1")
    assert c.ticket.id == ticket.id
    ticketing.stub.StartWork(
        pb.StartWorkRequest(tenant_id=t, ticket_id=c.ticket.id, claim_token=c.lease.claim_token)
    )
    submit(ticketing.stub, t, c)
    for i in range(3):
        fail(ticketing.stub, t, claim(ticketing.stub, t, f"agent-{i + 2}"), "flaky")

    events = outbox_events(ticketing, t)
    assert [e for e, _ in events] == [
        "ticket.created",
        "ticket.created",
        "ticket.assigned",
        "ticket.in_progress",
        "ticket.completed",
        "ticket.assigned",
        "ticket.failed",
        "ticket.assigned",
        "ticket.failed",
        "ticket.assigned",
        "ticket.failed",
        "ticket.quarantined",
    ]
    completed = events[4][1]
    assert completed["ticket_id"] == ticket.id and completed["agent_id"] == "agent-1"
    assert "duration_seconds" in completed
    assert events[-1][1]["reason"] == "Failed 3 times: flaky"

    audit = ticketing.stub.ListTicketEvents(
        pb.ListTicketEventsRequest(tenant_id=t, ticket_id=ticket.id)
    ).events
    assert [e.event_type for e in audit] == ["created", "assigned", "in_progress", "completed"]
    assert audit[1].actor_type == "agent" and audit[1].actor_id == "agent-1"


def test_a_rejected_transition_writes_no_audit_and_no_event(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("a")])
    c = claim(ticketing.stub, t, "agent-1")
    with ticketing.app.db.engine.connect() as conn:
        before = (
            conn.execute(sa.select(sa.func.count()).select_from(audit_events)).scalar(),
            len(outbox_events(ticketing, t)),
        )
    bad = pb.SubmitWorkRequest(
        tenant_id=t,
        ticket_id=c.ticket.id,
        claim_token="00000000-0000-4000-8000-000000000000",
        result_json="{}",
    )
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION):
        ticketing.stub.SubmitWork(bad)
    with ticketing.app.db.engine.connect() as conn:
        after = (
            conn.execute(sa.select(sa.func.count()).select_from(audit_events)).scalar(),
            len(outbox_events(ticketing, t)),
        )
    assert after == before


def test_outbox_rows_carry_the_callers_trace_context(ticketing: TicketingHarness) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    t = tenant()
    with tracer.start_as_current_span("client-call") as span, trace.use_span(span):
        create_project(ticketing.stub, t, [spec("a")])
        trace_id = format(span.get_span_context().trace_id, "032x")
    with ticketing.app.db.engine.connect() as conn:
        parent = conn.execute(sa.select(outbox.c.traceparent).where(outbox.c.tenant_id == t)).scalar_one()
    assert parent is not None and parent.split("-")[1] == trace_id


def test_the_claims_audit_and_event_are_the_ones_the_journal_builds(ticketing: TicketingHarness) -> None:
    """On PostgreSQL the claim writes its audit, outbox and idempotency rows
    inside its one statement (JSON built by the database); on SQLite the
    journal writes them. Both must be what `journal` builds for the ticket."""
    t = tenant()
    created = create_project(ticketing.stub, t, [spec("a"), spec("b")])
    first = claim(ticketing.stub, t, "agent-1", request_id="r-1")
    second = ticketing.stub.ClaimTicket(
        pb.ClaimTicketRequest(
            tenant_id=t, agent_id="agent-2", role=pb.AGENT_ROLE_CODER, project_id=created.project.id
        )
    )
    assert {first.ticket.id, second.ticket.id} == {x.id for x in created.tickets}

    with ticketing.app.db.engine.connect() as conn:
        audits = conn.execute(
            sa.select(audit_events).where(
                audit_events.c.tenant_id == t, audit_events.c.event_type == "assigned"
            )
        ).all()
        requests = conn.execute(sa.select(claim_requests).where(claim_requests.c.tenant_id == t)).all()
    assigned = [data for name, data in outbox_events(ticketing, t) if name == "ticket.assigned"]
    for c, agent in ((first, "agent-1"), (second, "agent-2")):
        ticket = ticketing.app.stores.tickets.get(t, c.ticket.id)
        assert ticket.lease is not None
        expires = ticket.lease.expires_at
        expected = journal.ticket_event(EventType.ASSIGNED, ticket, agent_id=agent, lease_expires_at=expires)
        assert json.loads(json.dumps(expected.data, default=str)) in assigned
        (row,) = [a for a in audits if a.ticket_id == c.ticket.id]
        assert (row.actor_type, row.actor_id) == ("agent", agent)
        assert json.loads(row.new_value) == {"stage": "coder", "lease_expires_at": str(expires)}
    (req,) = requests
    assert (req.agent_id, req.request_id, req.ticket_id, req.claim_token) == (
        "agent-1",
        "r-1",
        first.ticket.id,
        first.lease.claim_token,
    )
    assert req.fingerprint  # a reused request id for another claim is still refused
    again = claim(ticketing.stub, t, "agent-1", request_id="r-1")
    assert (again.ticket.id, again.lease.claim_token) == (first.ticket.id, first.lease.claim_token)
