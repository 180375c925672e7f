"""A hung agent (it heartbeats, its work makes no progress) loses its lease
after the stale deadline and another agent finishes the ticket, once; an
agent whose steps keep rising keeps its lease. Both backends, manual clock."""

from __future__ import annotations

from datetime import datetime, timedelta

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import claim, create_project, get, outbox_events, spec, submit, tenant

pytestmark = BACKENDS


def _beat(h: TicketingHarness, t: str, c: pb.ClaimTicketResponse, progress: int) -> None:
    h.stub.RenewLease(
        pb.RenewLeaseRequest(
            tenant_id=t, ticket_id=c.ticket.id, claim_token=c.lease.claim_token, progress=progress
        )
    )


def _at(h: TicketingHarness, minutes: int, start: datetime) -> None:
    h.clock.advance(start + timedelta(minutes=minutes) - h.clock.now())


def test_a_hung_agent_loses_its_ticket_and_another_finishes_it_once(ticketing: TicketingHarness) -> None:
    t = tenant()
    (ticket,) = create_project(ticketing.stub, t, [spec("a")]).tickets
    start = ticketing.clock.now()
    hung = claim(ticketing.stub, t, "agent-hung")
    _at(ticketing, 10, start)
    _beat(ticketing, t, hung, 3)  # three steps done: progress at +10 min
    for minute in (20, 30, 39):
        _at(ticketing, minute, start)
        _beat(ticketing, t, hung, 3)  # alive, but stuck
        assert ticketing.app.reaper.run_once() == 0, f"+{minute} min: not stale yet"
    _at(ticketing, 41, start)
    _beat(ticketing, t, hung, 3)
    assert ticketing.app.reaper.run_once() == 1
    released = get(ticketing.stub, t, ticket.id)
    assert (released.state, released.failure_count) == (pb.TICKET_STATE_READY, 1)
    assert released.last_failure_reason == "stale: no progress for 30 min while its agent kept heartbeating"

    with raises_status(grpc.StatusCode.FAILED_PRECONDITION):
        _beat(ticketing, t, hung, 4)  # the hung agent's next heartbeat: its lease is gone
    other = claim(ticketing.stub, t, "agent-2")
    submit(ticketing.stub, t, other)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION):
        submit(ticketing.stub, t, hung)
    assert [k for k, _ in outbox_events(ticketing, t) if k == "ticket.completed"] == ["ticket.completed"]


def test_an_agent_making_progress_keeps_its_lease(ticketing: TicketingHarness) -> None:
    t = tenant()
    (ticket,) = create_project(ticketing.stub, t, [spec("a")]).tickets
    start = ticketing.clock.now()
    busy = claim(ticketing.stub, t, "agent-busy")
    for step, minute in enumerate(range(10, 130, 10), 1):
        _at(ticketing, minute, start)
        _beat(ticketing, t, busy, step)
        assert ticketing.app.reaper.run_once() == 0
    assert get(ticketing.stub, t, ticket.id).state == pb.TICKET_STATE_ASSIGNED
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "progress"):
        _beat(ticketing, t, busy, -1)
