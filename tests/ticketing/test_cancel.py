"""Cancelling tickets and projects over real gRPC, both backends: the lease is
revoked at once (every call on it is FAILED_PRECONDITION naming the
cancellation, the LLM spend check refuses), the open merge request is closed,
dependents are refused or cascaded, an ensemble takes its attempts along,
and every bad request writes nothing."""

from __future__ import annotations

import json
from typing import Any

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import claim, create_project, get, outbox_events, snapshot, spec, submit, tenant

pytestmark = BACKENDS
CODER, REVIEWER, JUDGE = pb.AGENT_ROLE_CODER, pb.AGENT_ROLE_REVIEWER, pb.AGENT_ROLE_JUDGE
CANCELLED = pb.TICKET_STATE_CANCELLED


def _cancel(h: TicketingHarness, t: str, ticket_id: str, **kw: Any) -> list[pb.Ticket]:
    req = pb.CancelTicketRequest(
        tenant_id=t, ticket_id=ticket_id, operator="ops@acme", reason="wrong spec", **kw
    )
    return list(h.stub.CancelTicket(req).tickets)


def test_cancelling_a_worked_ticket_revokes_its_lease_at_once(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("a")]).tickets[0]
    held = claim(ticketing.stub, t, "agent-1")
    ticketing.stub.StartWork(
        pb.StartWorkRequest(tenant_id=t, ticket_id=ticket.id, claim_token=held.lease.claim_token)
    )
    (cancelled,) = _cancel(ticketing, t, ticket.id)
    assert cancelled.state == CANCELLED and not cancelled.HasField("lease")

    token = held.lease.claim_token
    for call in (
        lambda: ticketing.stub.RenewLease(
            pb.RenewLeaseRequest(tenant_id=t, ticket_id=ticket.id, claim_token=token)
        ),
        lambda: submit(ticketing.stub, t, held),
        lambda: ticketing.stub.ReportFailure(
            pb.ReportFailureRequest(tenant_id=t, ticket_id=ticket.id, claim_token=token, reason="x")
        ),
        lambda: ticketing.stub.AuthorizeTicketSpend(
            pb.AuthorizeTicketSpendRequest(tenant_id=t, ticket_id=ticket.id, agent_id="agent-1")
        ),
    ):
        with raises_status(grpc.StatusCode.FAILED_PRECONDITION):
            call()
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "was cancelled; stop working on it"):
        ticketing.stub.RenewLease(pb.RenewLeaseRequest(tenant_id=t, ticket_id=ticket.id, claim_token=token))
    assert claim(ticketing.stub, t, "agent-2").ticket.id == "", "a cancelled ticket is never claimed"
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "not quarantined"):
        ticketing.stub.RedriveTickets(
            pb.RedriveTicketsRequest(tenant_id=t, ticket_ids=[ticket.id], operator="ops@acme")
        )

    events = pb.ListTicketEventsRequest(tenant_id=t, ticket_id=ticket.id, page_size=50)
    (audit,) = [e for e in ticketing.stub.ListTicketEvents(events).events if e.event_type == "cancelled"]
    assert (audit.actor_type, audit.actor_id, audit.rationale) == ("human", "ops@acme", "wrong spec")
    assert json.loads(audit.old_value_json) == {"state": "in_progress", "agent_id": "agent-1"}
    (event,) = [d for kind, d in outbox_events(ticketing, t) if kind == "ticket.cancelled"]
    assert (event["agent_id"], event["reason"], event["state"]) == ("agent-1", "wrong spec", "cancelled")


def test_its_open_merge_request_is_closed(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("a", stages=[CODER, REVIEWER])]).tickets[0]
    work = json.dumps({"branch": "swarm/a", "commit": "c" * 40})
    submit(ticketing.stub, t, claim(ticketing.stub, t, "coder-1"), work)
    _cancel(ticketing, t, ticket.id)
    (mr,) = ticketing.stub.ListMergeRequests(pb.ListMergeRequestsRequest(tenant_id=t)).merge_requests
    assert mr.state == pb.MERGE_REQUEST_STATE_CLOSED and "wrong spec" in mr.review_comments
    assert [kind for kind, _ in outbox_events(ticketing, t) if kind.startswith("pr.")] == [
        "pr.opened",
        "pr.closed",
    ]


def test_dependents_are_refused_unless_cascaded(ticketing: TicketingHarness) -> None:
    t = tenant()
    made = create_project(
        ticketing.stub, t, [spec("a"), spec("b", depends_on=["a"]), spec("c", depends_on=["b"]), spec("d")]
    ).tickets
    a, b, c, d = made
    before = snapshot(ticketing)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "2 unfinished tickets depend on ticket"):
        _cancel(ticketing, t, a.id)
    assert snapshot(ticketing) == before
    assert [x.id for x in _cancel(ticketing, t, a.id, cascade=True)] == [a.id, b.id, c.id]
    assert get(ticketing.stub, t, d.id).state == pb.TICKET_STATE_READY


def test_bad_cancels_write_nothing(ticketing: TicketingHarness) -> None:
    t = tenant()
    a, b = create_project(ticketing.stub, t, [spec("a"), spec("b")]).tickets
    submit(ticketing.stub, t, claim(ticketing.stub, t, "agent-1"))  # a is done
    _cancel(ticketing, t, b.id)
    before = snapshot(ticketing)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "is done"):
        _cancel(ticketing, t, a.id)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "is cancelled"):
        _cancel(ticketing, t, b.id)
    with raises_status(grpc.StatusCode.NOT_FOUND):
        _cancel(ticketing, tenant(), b.id)  # another tenant's ticket
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "operator"):
        ticketing.stub.CancelTicket(pb.CancelTicketRequest(tenant_id=t, ticket_id=b.id))
    assert snapshot(ticketing) == before


def test_a_retried_cancel_answers_as_the_first(ticketing: TicketingHarness) -> None:
    t = tenant()
    (a,) = create_project(ticketing.stub, t, [spec("a")]).tickets
    first = _cancel(ticketing, t, a.id, request_id="cancel-1")
    again = _cancel(ticketing, t, a.id, request_id="cancel-1")
    assert [x.id for x in first] == [x.id for x in again] == [a.id]
    assert len([k for k, _ in outbox_events(ticketing, t) if k == "ticket.cancelled"]) == 1


def test_cancelling_a_project_stops_everything_not_done(ticketing: TicketingHarness) -> None:
    t = tenant()
    made = create_project(ticketing.stub, t, [spec("a"), spec("b", depends_on=["a"]), spec("c")])
    a, b, c = made.tickets
    submit(ticketing.stub, t, claim(ticketing.stub, t, "agent-1"))  # a is done
    claim(ticketing.stub, t, "agent-2")  # b or c leased
    req = pb.CancelProjectRequest(
        tenant_id=t, project_id=made.project.id, operator="ops@acme", reason="dropped"
    )
    cancelled = ticketing.stub.CancelProject(req).tickets
    assert sorted(x.id for x in cancelled) == sorted([b.id, c.id])
    assert get(ticketing.stub, t, a.id).state == pb.TICKET_STATE_DONE
    with raises_status(grpc.StatusCode.NOT_FOUND):
        ticketing.stub.CancelProject(
            pb.CancelProjectRequest(tenant_id=tenant(), project_id=made.project.id, operator="x")
        )


def _ensemble(h: TicketingHarness, t: str, **kw: Any) -> list[pb.Ticket]:
    ticket = pb.TicketSpec(key="e", name="E", pattern=pb.COLLABORATION_PATTERN_ENSEMBLE, **kw)
    return list(
        h.stub.CreateProject(pb.CreateProjectRequest(tenant_id=t, name="p", tickets=[ticket])).tickets
    )


def test_an_ensemble_takes_its_attempts_along_and_a_cancelled_attempt_has_ended(
    ticketing: TicketingHarness,
) -> None:
    t = tenant()
    main, *attempts = _ensemble(ticketing, t)
    assert {x.id for x in _cancel(ticketing, t, main.id)} == {main.id, *(a.id for a in attempts)}

    t = tenant()
    main, first, *_ = _ensemble(ticketing, t)
    assert [x.id for x in _cancel(ticketing, t, first.id)] == [first.id], "the ensemble is not a dependent"
    for n in (2, 3):
        c = claim(ticketing.stub, t, f"coder-{n}", role=CODER)
        submit(ticketing.stub, t, c, json.dumps({"branch": f"swarm/a{n}", "commit": f"{n:040x}"}))
    assert get(ticketing.stub, t, main.id).state == pb.TICKET_STATE_READY, "every attempt ended, two done"


def test_the_judges_choice_cancels_the_attempts_still_at_work(ticketing: TicketingHarness) -> None:
    t = tenant()
    main, *attempts = _ensemble(ticketing, t, ensemble_size=3, ensemble_quorum=2)
    leases = [claim(ticketing.stub, t, f"coder-{n}", role=CODER) for n in (1, 2, 3)]
    for n, c in enumerate(leases[:2], 1):
        submit(ticketing.stub, t, c, json.dumps({"branch": f"swarm/a{n}", "commit": f"{n:040x}"}))
    judge = claim(ticketing.stub, t, "judge-1", role=JUDGE)
    submit(ticketing.stub, t, judge, json.dumps({"choice": "1", "rationale": "first is fine"}))
    late = leases[2]
    assert get(ticketing.stub, t, late.ticket.id).state == CANCELLED
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "cancelled"):
        submit(ticketing.stub, t, late, json.dumps({"branch": "swarm/a3", "commit": "3" * 40}))
    events = pb.ListTicketEventsRequest(tenant_id=t, ticket_id=late.ticket.id, page_size=50)
    (audit,) = [e for e in ticketing.stub.ListTicketEvents(events).events if e.event_type == "cancelled"]
    assert (audit.actor_type, audit.rationale) == ("system", "the judge chose attempt 1")
