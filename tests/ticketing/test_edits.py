"""UpdateTicket over real gRPC, both backends: a dead letter's spec is fixed
and then redriven, stages change and restart the ticket, an ensemble shares
its new spec with its attempts; tickets under a lease, finished ones and bad
edits are refused and nothing is written."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from swarm.ticketing.v1 import ticketing_pb2 as pb
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import claim, create_project, fail, get, snapshot, spec, submit, tenant

pytestmark = BACKENDS
CODER, SECURITY, REVIEWER = pb.AGENT_ROLE_CODER, pb.AGENT_ROLE_SECURITY, pb.AGENT_ROLE_REVIEWER


def _edit(h: TicketingHarness, t: str, ticket_id: str, **kw: Any) -> pb.Ticket:
    req = pb.UpdateTicketRequest(tenant_id=t, ticket_id=ticket_id, operator="ops@acme", **kw)
    return h.stub.UpdateTicket(req).ticket


def test_a_dead_letters_spec_is_fixed_then_redriven(ticketing: TicketingHarness) -> None:
    t = tenant()
    (ticket,) = create_project(ticketing.stub, t, [spec("a")]).tickets
    for n in range(3):
        fail(ticketing.stub, t, claim(ticketing.stub, t, f"agent-{n}"), "spec has a syntax error")
    assert get(ticketing.stub, t, ticket.id).state == pb.TICKET_STATE_QUARANTINED
    fixed = _edit(ticketing, t, ticket.id, description="Migrate the schema (line 12 fixed)", reason="typo")
    assert fixed.state == pb.TICKET_STATE_QUARANTINED, "a dead letter waits for its redrive"
    events = ticketing.stub.ListTicketEvents(pb.ListTicketEventsRequest(tenant_id=t, ticket_id=ticket.id))
    (edited,) = [e for e in events.events if e.event_type == "edited"]
    assert json.loads(edited.old_value_json) == {"description": ""}
    assert json.loads(edited.new_value_json) == {"description": "Migrate the schema (line 12 fixed)"}
    assert (edited.actor_id, edited.rationale) == ("ops@acme", "typo")
    ticketing.stub.RedriveTickets(
        pb.RedriveTicketsRequest(tenant_id=t, ticket_ids=[ticket.id], operator="ops")
    )
    assert claim(ticketing.stub, t, "agent-9").ticket.description == "Migrate the schema (line 12 fixed)"


def test_new_stages_start_the_ticket_at_the_first(ticketing: TicketingHarness) -> None:
    t = tenant()
    (ticket,) = create_project(ticketing.stub, t, [spec("a", stages=[CODER, REVIEWER])]).tickets
    submit(ticketing.stub, t, claim(ticketing.stub, t, "coder-1"))
    assert get(ticketing.stub, t, ticket.id).stage_index == 1
    edited = _edit(ticketing, t, ticket.id, stages=[CODER, SECURITY, REVIEWER], priority=7)
    assert (list(edited.stages), edited.stage_index, edited.priority) == ([CODER, SECURITY, REVIEWER], 0, 7)
    assert claim(ticketing.stub, t, "reviewer-1", role=REVIEWER).ticket.id == ""
    assert claim(ticketing.stub, t, "coder-2", role=CODER).ticket.id == ticket.id


@pytest.mark.parametrize(
    ("change", "code", "said"),
    [
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "nothing to change"),
        ({"priority": 5000}, grpc.StatusCode.INVALID_ARGUMENT, "priority"),
        ({"stages": [0]}, grpc.StatusCode.INVALID_ARGUMENT, "stages[0]"),
        ({"description": "x" * 20_001}, grpc.StatusCode.INVALID_ARGUMENT, "description"),
    ],
)
def test_bad_edits_write_nothing(
    ticketing: TicketingHarness, change: dict[str, Any], code: grpc.StatusCode, said: str
) -> None:
    t = tenant()
    (ticket,) = create_project(ticketing.stub, t, [spec("a")]).tickets
    before = snapshot(ticketing)
    with raises_status(code, said):
        _edit(ticketing, t, ticket.id, **change)
    assert snapshot(ticketing) == before


def test_tickets_at_work_or_finished_are_not_edited(ticketing: TicketingHarness) -> None:
    t = tenant()
    a, b = create_project(ticketing.stub, t, [spec("a"), spec("b")]).tickets
    held = claim(ticketing.stub, t, "agent-1")
    submit(ticketing.stub, t, claim(ticketing.stub, t, "agent-2"))  # the other one is done
    done = b.id if held.ticket.id == a.id else a.id
    before = snapshot(ticketing)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "assigned"):
        _edit(ticketing, t, held.ticket.id, priority=1)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "done"):
        _edit(ticketing, t, done, priority=1)
    with raises_status(grpc.StatusCode.NOT_FOUND):
        _edit(ticketing, tenant(), done, priority=1)
    assert snapshot(ticketing) == before


def test_an_ensemble_shares_its_new_spec_with_its_attempts(ticketing: TicketingHarness) -> None:
    t = tenant()
    ensemble = pb.TicketSpec(key="e", name="E", pattern=pb.COLLABORATION_PATTERN_ENSEMBLE, ensemble_size=2)
    main, *attempts = ticketing.stub.CreateProject(
        pb.CreateProjectRequest(tenant_id=t, name="p", tickets=[ensemble])
    ).tickets
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "pattern"):
        _edit(ticketing, t, main.id, stages=[CODER])
    _edit(ticketing, t, main.id, description="Parse RFC 3339 dates", priority=3, request_id="e-1")
    _edit(ticketing, t, main.id, description="Parse RFC 3339 dates", priority=3, request_id="e-1")  # a retry
    for a in attempts:
        now = get(ticketing.stub, t, a.id)
        assert (now.description, now.priority) == ("Parse RFC 3339 dates", 3)
    events = ticketing.stub.ListTicketEvents(pb.ListTicketEventsRequest(tenant_id=t, ticket_id=main.id))
    assert [e.event_type for e in events.events].count("edited") == 1
