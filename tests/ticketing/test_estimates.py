"""Estimates and progress over real gRPC, both backends: tickets are
estimated at creation, a done ticket's actual minutes are its leases' time
(not its wait), ten done tickets of a kind make the tenant's next estimate
one from history (never another tenant's), and a project's progress and
ETA follow its tickets."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf.duration_pb2 import Duration

from swarm.ticketing.v1 import ticketing_pb2 as pb
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import create_project, fail, get, spec, submit, tenant

pytestmark = BACKENDS


def _claim(h: TicketingHarness, t: str, agent: str) -> pb.ClaimTicketResponse:
    """A two-hour lease (the longest): the clock moves by whole work sessions here."""
    lease = Duration(seconds=7200)
    return h.stub.ClaimTicket(pb.ClaimTicketRequest(tenant_id=t, agent_id=agent, lease_duration=lease))


def _progress(h: TicketingHarness, t: str, project_id: str) -> pb.GetProjectProgressResponse:
    return h.stub.GetProjectProgress(pb.GetProjectProgressRequest(tenant_id=t, project_id=project_id))


def test_actual_minutes_are_the_leases_time_not_the_wait(ticketing: TicketingHarness) -> None:
    t = tenant()
    (ticket,) = create_project(ticketing.stub, t, [spec("a")]).tickets
    assert (ticket.estimate.complexity_score, ticket.estimate.expected_minutes) == (4, 25)
    assert ticket.estimate.confidence == "low" and not ticket.HasField("actual_minutes")
    ticketing.clock.advance(timedelta(minutes=30))  # waiting in the queue
    first = _claim(ticketing, t, "agent-1")
    ticketing.clock.advance(timedelta(minutes=5))
    fail(ticketing.stub, t, first, "flaky build")  # a failed attempt is work too
    ticketing.clock.advance(timedelta(minutes=60))  # waiting again
    second = _claim(ticketing, t, "agent-2")
    ticketing.clock.advance(timedelta(minutes=7))
    done = submit(ticketing.stub, t, second).ticket
    assert done.actual_minutes == 12.0 == get(ticketing.stub, t, ticket.id).actual_minutes


def _work_through(h: TicketingHarness, t: str, minutes: list[int]) -> None:
    made = create_project(h.stub, t, [spec(str(i)) for i in range(len(minutes))])
    for m in minutes:
        c = _claim(h, t, "agent")
        h.clock.advance(timedelta(minutes=m))
        submit(h.stub, t, c)
    assert _progress(h, t, made.project.id).done == len(minutes)


def test_ten_done_tickets_make_the_next_estimate_from_history(ticketing: TicketingHarness) -> None:
    t, other = tenant(), tenant()
    _work_through(ticketing, t, [10, 12, 14, 16, 18, 20, 22, 24, 26, 100])
    (estimated,) = create_project(ticketing.stub, t, [spec("next")]).tickets
    e = estimated.estimate
    assert (e.optimistic_minutes, e.expected_minutes, e.pessimistic_minutes, e.confidence) == (
        13,
        19,
        33,
        "high",
    )
    (theirs,) = create_project(ticketing.stub, other, [spec("next")]).tickets
    assert theirs.estimate.confidence == "low", "another tenant's history is not used"
    # A type with no history of its own falls back to the heuristic.
    docs = pb.TicketSpec(key="d", name="d", type=pb.TICKET_TYPE_DOCS)
    (doc,) = create_project(ticketing.stub, t, [docs]).tickets
    assert doc.estimate.confidence == "low"


def test_progress_and_eta_follow_the_tickets(ticketing: TicketingHarness) -> None:
    t = tenant()
    made = create_project(
        ticketing.stub, t, [spec("a"), spec("b", depends_on=["a"]), spec("c", depends_on=["b"]), spec("d")]
    )
    start = _progress(ticketing, t, made.project.id)
    assert (start.ticket_count, start.queued, start.done, start.percent_complete) == (4, 4, 0, 0.0)
    # Four tickets of 25 expected minutes; the chain a -> b -> c is 75.
    assert (start.remaining_minutes, start.critical_path_minutes) == (100.0, 75.0)
    assert (start.working_agents, start.eta_minutes) == (0, 100.0)
    _claim(ticketing, t, "agent-1")
    _claim(ticketing, t, "agent-2")
    busy = _progress(ticketing, t, made.project.id)
    assert (busy.in_progress, busy.queued, busy.working_agents) == (2, 2, 2)
    assert busy.eta_minutes == 75.0, "two agents halve 100, but the chain takes 75"
    assert busy.eta_time.ToDatetime() > ticketing.clock.now().replace(tzinfo=None)


def test_progress_reports_how_good_the_estimates_were(ticketing: TicketingHarness) -> None:
    t = tenant()
    made = create_project(ticketing.stub, t, [spec("in"), spec("out")])  # each 13..50 minutes
    for minutes in (20, 90):
        c = _claim(ticketing, t, "agent")
        ticketing.clock.advance(timedelta(minutes=minutes))
        submit(ticketing.stub, t, c)
    done = _progress(ticketing, t, made.project.id)
    assert (done.percent_complete, done.estimated_done, done.inside_range) == (100.0, 2, 1)
    assert (done.remaining_minutes, done.eta_minutes) == (0.0, 0.0)


def test_another_tenants_project_is_not_found(ticketing: TicketingHarness) -> None:
    made = create_project(ticketing.stub, tenant(), [spec("a")])
    with raises_status(grpc.StatusCode.NOT_FOUND):
        _progress(ticketing, tenant(), made.project.id)
