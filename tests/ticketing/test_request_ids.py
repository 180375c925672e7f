"""Request ids (AIP-155) on every mutating call: a retry with the same
request_id answers as the first call did and writes nothing (no audit row, no
outbox event, no second lease); the same request_id on a different request is
INVALID_ARGUMENT and writes nothing either."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from swarm.ticketing.v1 import ticketing_pb2 as pb
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import CODER, REVIEWER, claim, create_project, fail, snapshot, spec, tenant

pytestmark = BACKENDS

OTHER_TOKEN = "00000000-0000-4000-8000-000000000000"
Call = Callable[[TicketingHarness, dict[str, Any], str], Message]


def _project(h: TicketingHarness, tid: str) -> dict[str, Any]:
    return {"tenant": tid}


def _two_ready(h: TicketingHarness, tid: str) -> dict[str, Any]:
    create_project(h.stub, tid, [spec("a"), spec("b")])
    return {"tenant": tid}


def _claimed(h: TicketingHarness, tid: str) -> dict[str, Any]:
    # b depends on a: submitting a unblocks b, so SubmitWork has something to report.
    create_project(h.stub, tid, [spec("a"), spec("b", depends_on=["a"]), spec("c")])
    return {"tenant": tid, "claim": claim(h.stub, tid, "agent-1")}


def _quarantined(h: TicketingHarness, tid: str) -> dict[str, Any]:
    ticket = create_project(h.stub, tid, [spec("poison")]).tickets[0]
    for i in range(3):
        fail(h.stub, tid, claim(h.stub, tid, f"a{i}"), "bad")
    return {"tenant": tid, "ticket": ticket.id}


def _two_leases(h: TicketingHarness, tid: str) -> dict[str, Any]:
    create_project(h.stub, tid, [spec("x"), spec("y")])
    claim(h.stub, tid, "doomed")
    claim(h.stub, tid, "doomed")
    return {"tenant": tid}


def _lease(c: dict[str, Any]) -> dict[str, str]:
    return {
        "tenant_id": c["tenant"],
        "ticket_id": c["claim"].ticket.id,
        "claim_token": c["claim"].lease.claim_token,
    }


@dataclass(frozen=True)
class Case:
    setup: Callable[[TicketingHarness, str], dict[str, Any]]
    call: Call
    # The same request_id on a request that differs in one field.
    other: Call


CASES = {
    "CreateProject": Case(
        _project,
        lambda h, c, rid: h.stub.CreateProject(
            pb.CreateProjectRequest(tenant_id=c["tenant"], name="p", tickets=[spec("a")], request_id=rid)
        ),
        lambda h, c, rid: h.stub.CreateProject(
            pb.CreateProjectRequest(tenant_id=c["tenant"], name="q", tickets=[spec("a")], request_id=rid)
        ),
    ),
    "ClaimTicket": Case(
        _two_ready,
        lambda h, c, rid: claim(h.stub, c["tenant"], "agent-1", request_id=rid),
        lambda h, c, rid: claim(h.stub, c["tenant"], "agent-1", request_id=rid, role=REVIEWER),
    ),
    "RenewLease": Case(
        _claimed,
        lambda h, c, rid: h.stub.RenewLease(pb.RenewLeaseRequest(**_lease(c), request_id=rid)),
        lambda h, c, rid: h.stub.RenewLease(
            pb.RenewLeaseRequest(**_lease(c), request_id=rid, lease_duration=Duration(seconds=30))
        ),
    ),
    "StartWork": Case(
        _claimed,
        lambda h, c, rid: h.stub.StartWork(pb.StartWorkRequest(**_lease(c), request_id=rid)),
        lambda h, c, rid: h.stub.StartWork(
            pb.StartWorkRequest(**{**_lease(c), "claim_token": OTHER_TOKEN}, request_id=rid)
        ),
    ),
    "SubmitWork": Case(
        _claimed,
        lambda h, c, rid: h.stub.SubmitWork(
            pb.SubmitWorkRequest(**_lease(c), result_json='{"n":1}', request_id=rid)
        ),
        lambda h, c, rid: h.stub.SubmitWork(
            pb.SubmitWorkRequest(**_lease(c), result_json='{"n":2}', request_id=rid)
        ),
    ),
    "ReportFailure": Case(
        _claimed,
        lambda h, c, rid: h.stub.ReportFailure(
            pb.ReportFailureRequest(**_lease(c), reason="flaky", request_id=rid)
        ),
        lambda h, c, rid: h.stub.ReportFailure(
            pb.ReportFailureRequest(**_lease(c), reason="other", request_id=rid)
        ),
    ),
    "ReleaseClaim": Case(
        _claimed,
        lambda h, c, rid: h.stub.ReleaseClaim(pb.ReleaseClaimRequest(**_lease(c), request_id=rid)),
        lambda h, c, rid: h.stub.ReleaseClaim(
            pb.ReleaseClaimRequest(**{**_lease(c), "claim_token": OTHER_TOKEN}, request_id=rid)
        ),
    ),
    "ReleaseAgentClaims": Case(
        _two_leases,
        lambda h, c, rid: h.stub.ReleaseAgentClaims(
            pb.ReleaseAgentClaimsRequest(
                tenant_id=c["tenant"], agent_id="doomed", reason="gone", request_id=rid
            )
        ),
        lambda h, c, rid: h.stub.ReleaseAgentClaims(
            pb.ReleaseAgentClaimsRequest(
                tenant_id=c["tenant"], agent_id="doomed", reason="other", request_id=rid
            )
        ),
    ),
    "RedriveTickets": Case(
        _quarantined,
        lambda h, c, rid: h.stub.RedriveTickets(
            pb.RedriveTicketsRequest(
                tenant_id=c["tenant"],
                ticket_ids=[c["ticket"]],
                operator="ops",
                reason="fixed",
                request_id=rid,
            )
        ),
        lambda h, c, rid: h.stub.RedriveTickets(
            pb.RedriveTicketsRequest(
                tenant_id=c["tenant"],
                ticket_ids=[c["ticket"]],
                operator="ops",
                reason="again",
                request_id=rid,
            )
        ),
    ),
}
RPCS = pytest.mark.parametrize("rpc", list(CASES))


@RPCS
def test_a_retry_answers_as_the_first_call_and_writes_nothing(ticketing: TicketingHarness, rpc: str) -> None:
    case = CASES[rpc]
    ctx = case.setup(ticketing, tenant())
    first = case.call(ticketing, ctx, "req-1")
    before = snapshot(ticketing)
    # Time passes before the retry arrives: a renewal must not be extended again.
    ticketing.clock.advance(timedelta(seconds=30))
    again = case.call(ticketing, ctx, "req-1")
    assert again == first
    assert snapshot(ticketing) == before


@RPCS
def test_a_request_id_reused_for_another_request_is_refused(ticketing: TicketingHarness, rpc: str) -> None:
    case = CASES[rpc]
    ctx = case.setup(ticketing, tenant())
    case.call(ticketing, ctx, "req-1")
    before = snapshot(ticketing)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id", rpc):
        case.other(ticketing, ctx, "req-1")
    assert snapshot(ticketing) == before


@pytest.mark.parametrize("rpc", ["CreateProject", "ReportFailure", "ReleaseAgentClaims", "RedriveTickets"])
def test_concurrent_retries_get_one_answer_and_one_write(ticketing: TicketingHarness, rpc: str) -> None:
    case = CASES[rpc]
    ctx = case.setup(ticketing, tenant())
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: case.call(ticketing, ctx, "same"), range(8)))
    assert all(a == answers[0] for a in answers)
    before = snapshot(ticketing)
    assert case.call(ticketing, ctx, "same") == answers[0]
    assert snapshot(ticketing) == before


def test_a_request_id_is_scoped_by_call_and_tenant(ticketing: TicketingHarness) -> None:
    a, b = tenant(), tenant()
    create_project(ticketing.stub, a, [spec("a", stages=[CODER])])
    c = claim(ticketing.stub, a, "agent", request_id="same")
    lease = {"tenant_id": a, "ticket_id": c.ticket.id, "claim_token": c.lease.claim_token}
    ticketing.stub.StartWork(pb.StartWorkRequest(**lease, request_id="same"))
    done = ticketing.stub.SubmitWork(pb.SubmitWorkRequest(**lease, request_id="same"))
    assert done.ticket.state == pb.TICKET_STATE_DONE
    other = ticketing.stub.CreateProject(
        pb.CreateProjectRequest(tenant_id=b, name="p", tickets=[spec("a")], request_id="same")
    )
    assert other.project.tenant_id == b


def test_request_ids_are_forgotten_after_their_retention(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticketing.stub.CreateProject(
        pb.CreateProjectRequest(tenant_id=t, name="p", tickets=[spec("a"), spec("b")], request_id="create-1")
    )
    first = claim(ticketing.stub, t, "agent", request_id="claim-1")
    ticketing.clock.advance(timedelta(hours=23))
    assert ticketing.app.reaper.run_once() == 1  # the lease expired; the request ids are kept
    assert _request_rows(ticketing) == (1, 1)
    ticketing.clock.advance(timedelta(hours=2))
    ticketing.app.reaper.run_once()
    assert _request_rows(ticketing) == (0, 0)
    again = claim(ticketing.stub, t, "agent", request_id="claim-1")
    assert again.lease.claim_token != first.lease.claim_token  # a new claim, not a replay


def _request_rows(h: TicketingHarness) -> tuple[int, int]:
    rows = snapshot(h)
    return len(rows["request_log"]), len(rows["claim_requests"])
