"""Cost caps in ticketing: where a ticket's cap comes from, the lease check
the LLM proxy makes before a call, the budget hold (no failure counted,
audited, announced, in the dead-letter queue) and its way back."""

from __future__ import annotations

from datetime import timedelta

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import claim, fail, get, outbox_events, snapshot, spec, submit, tenant

pytestmark = BACKENDS


def _capped(t: str, cap: int | None = None, ticket_cap: int | None = None) -> pb.CreateProjectRequest:
    tickets = [spec("own"), spec("inherits")]
    if ticket_cap is not None:
        tickets[0].cost_cap_usd_micros = ticket_cap
    return pb.CreateProjectRequest(tenant_id=t, name="caps", tickets=tickets, ticket_cost_cap_usd_micros=cap)


def _authorize(h: TicketingHarness, t: str, ticket_id: str, agent: str) -> pb.AuthorizeTicketSpendResponse:
    return h.stub.AuthorizeTicketSpend(
        pb.AuthorizeTicketSpendRequest(tenant_id=t, ticket_id=ticket_id, agent_id=agent)
    )


def _release(
    h: TicketingHarness, t: str, ticket_id: str, agent: str, request_id: str = ""
) -> pb.ReleaseForBudgetResponse:
    return h.stub.ReleaseForBudget(
        pb.ReleaseForBudgetRequest(
            tenant_id=t,
            ticket_id=ticket_id,
            agent_id=agent,
            spent_usd_micros=2_500_000,
            cost_cap_usd_micros=2_000_000,
            request_id=request_id,
        )
    )


def test_the_cap_is_the_tickets_else_the_projects_else_none(ticketing: TicketingHarness) -> None:
    t = tenant()
    created = ticketing.stub.CreateProject(_capped(t, cap=3_000_000, ticket_cap=500_000))
    assert created.project.ticket_cost_cap_usd_micros == 3_000_000
    own, inherits = created.tickets
    assert own.cost_cap_usd_micros == 500_000 and not inherits.HasField("cost_cap_usd_micros")
    for agent in ("a1", "a2"):
        claim(ticketing.stub, t, agent)
    first = _authorize(ticketing, t, own.id, "a1")
    assert (first.cost_cap_usd_micros, first.cost_cap_source) == (500_000, pb.COST_CAP_SOURCE_TICKET)
    assert first.project_id == created.project.id
    second = _authorize(ticketing, t, inherits.id, "a2")
    assert (second.cost_cap_usd_micros, second.cost_cap_source) == (3_000_000, pb.COST_CAP_SOURCE_PROJECT)

    bare = ticketing.stub.CreateProject(_capped(t)).tickets[0]
    claim(ticketing.stub, t, "a3")
    none = _authorize(ticketing, t, bare.id, "a3")
    assert not none.HasField("cost_cap_usd_micros")
    assert none.cost_cap_source == pb.COST_CAP_SOURCE_UNSPECIFIED


def test_spending_needs_the_live_lease(ticketing: TicketingHarness) -> None:
    t = tenant()
    held, idle = ticketing.stub.CreateProject(_capped(t)).tickets
    claim(ticketing.stub, t, "a1")
    with raises_status(grpc.StatusCode.PERMISSION_DENIED, "held by another agent"):
        _authorize(ticketing, t, held.id, "a2")
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "holds no lease"):
        _authorize(ticketing, t, idle.id, "a1")
    with raises_status(grpc.StatusCode.NOT_FOUND, held.id):
        _authorize(ticketing, tenant(), held.id, "a1")
    ticketing.clock.advance(timedelta(minutes=16))
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "expired"):
        _authorize(ticketing, t, held.id, "a1")


def test_a_budget_hold_ends_the_lease_without_a_failure_and_waits_for_review(
    ticketing: TicketingHarness,
) -> None:
    t = tenant()
    ticket = ticketing.stub.CreateProject(_capped(t, cap=2_000_000)).tickets[0]
    fail(ticketing.stub, t, claim(ticketing.stub, t, "a0"), "flaky")
    c = claim(ticketing.stub, t, "a1")
    assert c.ticket.id == ticket.id

    with raises_status(grpc.StatusCode.PERMISSION_DENIED, "held by another agent"):
        _release(ticketing, t, ticket.id, "a2")
    held = _release(ticketing, t, ticket.id, "a1", request_id="hold-1").ticket
    assert held.state == pb.TICKET_STATE_QUARANTINED
    assert held.quarantine_cause == pb.QUARANTINE_CAUSE_BUDGET_EXCEEDED
    assert held.quarantine_reason == "budget exceeded: $2.5000 spent of a $2.0000 cost cap"
    assert held.failure_count == 1 and not held.HasField("lease")
    assert _release(ticketing, t, ticket.id, "a1", request_id="hold-1").ticket == held  # a retry
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "holds no lease"):
        _release(ticketing, t, ticket.id, "a1")
    # The agent's old lease is gone for every other call too.
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "claim it first"):
        submit(ticketing.stub, t, c)

    dead = ticketing.stub.ListDeadLetters(pb.ListDeadLettersRequest(tenant_id=t)).tickets
    assert [d.id for d in dead] == [ticket.id]
    events = [(kind, data) for kind, data in outbox_events(ticketing, t) if kind == "ticket.budget_exceeded"]
    assert len(events) == 1
    assert events[0][1]["agent_id"] == "a1" and events[0][1]["state"] == "quarantined"
    assert events[0][1]["failure_count"] == 1
    audit = ticketing.stub.ListTicketEvents(pb.ListTicketEventsRequest(tenant_id=t, ticket_id=ticket.id))
    budget = [e for e in audit.events if e.event_type == "budget_exceeded"]
    assert len(budget) == 1 and budget[0].actor_type == "system"
    assert [e.event_type for e in audit.events].count("failure_recorded") == 1

    raised = ticketing.stub.SetTicketCostCap(
        pb.SetTicketCostCapRequest(
            tenant_id=t, ticket_id=ticket.id, cost_cap_usd_micros=5_000_000, operator="ops", reason="worth it"
        )
    ).ticket
    assert raised.cost_cap_usd_micros == 5_000_000 and raised.state == pb.TICKET_STATE_QUARANTINED
    back = ticketing.stub.RedriveTickets(
        pb.RedriveTicketsRequest(tenant_id=t, ticket_ids=[ticket.id], operator="ops", reason="cap raised")
    ).tickets[0]
    assert back.state == pb.TICKET_STATE_READY and back.failure_count == 1
    assert back.quarantine_cause == pb.QUARANTINE_CAUSE_UNSPECIFIED and back.quarantine_reason == ""
    again = claim(ticketing.stub, t, "a2")
    assert again.ticket.id == ticket.id
    assert _authorize(ticketing, t, ticket.id, "a2").cost_cap_usd_micros == 5_000_000
    changes = ticketing.stub.ListTicketEvents(pb.ListTicketEventsRequest(tenant_id=t, ticket_id=ticket.id))
    cap_change = [e for e in changes.events if e.event_type == "cost_cap_changed"]
    assert len(cap_change) == 1 and cap_change[0].actor_id == "ops" and cap_change[0].rationale == "worth it"


def test_quarantine_by_failures_is_marked_as_such(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = ticketing.stub.CreateProject(_capped(t)).tickets[0]
    for i in range(3):
        fail(ticketing.stub, t, claim(ticketing.stub, t, f"a{i}"), "boom")
    assert get(ticketing.stub, t, ticket.id).quarantine_cause == pb.QUARANTINE_CAUSE_FAILURES
    assert get(ticketing.stub, t, ticket.id).failure_count == 3


def test_bad_caps_are_refused_naming_the_field_and_write_nothing(ticketing: TicketingHarness) -> None:
    t = tenant()
    before = snapshot(ticketing)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "ticket_cost_cap_usd_micros"):
        ticketing.stub.CreateProject(_capped(t, cap=-1))
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "tickets[0].cost_cap_usd_micros"):
        ticketing.stub.CreateProject(_capped(t, ticket_cap=10**16))
    assert snapshot(ticketing) == before
    ticket = ticketing.stub.CreateProject(_capped(t, cap=0)).tickets[0]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "cost_cap_usd_micros"):
        ticketing.stub.SetTicketCostCap(
            pb.SetTicketCostCapRequest(
                tenant_id=t, ticket_id=ticket.id, cost_cap_usd_micros=-5, operator="ops"
            )
        )
    with raises_status(grpc.StatusCode.NOT_FOUND, ticket.id):
        ticketing.stub.SetTicketCostCap(
            pb.SetTicketCostCapRequest(tenant_id=tenant(), ticket_id=ticket.id, operator="ops")
        )
    assert not get(ticketing.stub, t, ticket.id).HasField("cost_cap_usd_micros")
    capped = ticketing.stub.SetTicketCostCap(
        pb.SetTicketCostCapRequest(tenant_id=t, ticket_id=ticket.id, cost_cap_usd_micros=7, operator="ops")
    ).ticket
    assert capped.cost_cap_usd_micros == 7
    unset = ticketing.stub.SetTicketCostCap(
        pb.SetTicketCostCapRequest(tenant_id=t, ticket_id=ticket.id, operator="ops")
    ).ticket
    assert not unset.HasField("cost_cap_usd_micros")
