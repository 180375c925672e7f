"""Leased claims through the real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarmcommon.grpcclient import channel
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import error_info, raises_status
from tests.support.ticketing import REVIEWER, claim, create_project, get, spec, submit, tenant

pytestmark = BACKENDS


@pytest.mark.slow
def test_64_agents_complete_1000_tickets_exactly_once(ticketing: TicketingHarness) -> None:
    t = tenant()
    n_tickets, n_agents = 1000, 64
    # Two projects with mixed priorities so the claim order is exercised too.
    for half in range(2):
        create_project(
            ticketing.stub,
            t,
            [spec(f"{half}-{i}", priority=i % 7) for i in range(n_tickets // 2)],
            name=f"load-{half}",
        )
    claimed: list[str] = []
    done: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def agent(n: int) -> None:
        ch = channel(ticketing.target)
        stub = pb_grpc.TicketingServiceStub(ch)
        try:
            seq = 0
            while True:
                seq += 1
                c = claim(stub, t, f"agent-{n}", request_id=f"a{n}-{seq}")
                if not c.HasField("ticket"):
                    return
                with lock:
                    claimed.append(c.ticket.id)
                stub.StartWork(
                    pb.StartWorkRequest(tenant_id=t, ticket_id=c.ticket.id, claim_token=c.lease.claim_token)
                )
                r = submit(stub, t, c, f'{{"agent": {n}}}')
                with lock:
                    done.append(r.ticket.id)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            ch.close()

    with ThreadPoolExecutor(n_agents) as pool:
        list(pool.map(agent, range(n_agents)))

    assert errors == [], f"{len(errors)} agents failed; first: {errors[0]!r}"
    dupes = [tid for tid, k in Counter(claimed).items() if k > 1]
    assert dupes == [], f"{len(dupes)} tickets claimed more than once"
    assert len(claimed) == n_tickets
    assert sorted(done) == sorted(claimed)
    listed = ticketing.stub.ListTickets(
        pb.ListTicketsRequest(tenant_id=t, state=pb.TICKET_STATE_DONE, page_size=1000)
    ).tickets
    assert len(listed) == n_tickets


def test_claim_order_is_priority_then_oldest(ticketing: TicketingHarness) -> None:
    t = tenant()
    first = create_project(ticketing.stub, t, [spec("low", priority=1), spec("high", priority=9)])
    ticketing.clock.advance(timedelta(seconds=1))
    second = create_project(ticketing.stub, t, [spec("high-later", priority=9)])
    order = [claim(ticketing.stub, t, "a").ticket.id for _ in range(3)]
    by_key = {tk.name: tk.id for tk in [*first.tickets, *second.tickets]}
    assert order == [by_key["ticket high"], by_key["ticket high-later"], by_key["ticket low"]]
    assert not claim(ticketing.stub, t, "a").HasField("ticket")


def test_same_request_id_returns_same_ticket_and_token(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("a"), spec("b")])
    first = claim(ticketing.stub, t, "agent-1", request_id="req-1")
    again = claim(ticketing.stub, t, "agent-1", request_id="req-1")
    assert again.ticket.id == first.ticket.id
    assert again.lease.claim_token == first.lease.claim_token
    assert again.lease.expire_time == first.lease.expire_time
    # A new request id gets the other ticket: the retry did not consume it.
    other = claim(ticketing.stub, t, "agent-1", request_id="req-2")
    assert other.ticket.id != first.ticket.id


def test_concurrent_retries_of_one_claim_get_one_lease(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec(str(i)) for i in range(10)])
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: claim(ticketing.stub, t, "agent-1", request_id="same"), range(8)))
    assert len({r.ticket.id for r in results}) == 1
    assert len({r.lease.claim_token for r in results}) == 1
    assigned = ticketing.stub.ListTickets(pb.ListTicketsRequest(tenant_id=t, state=pb.TICKET_STATE_ASSIGNED))
    assert len(assigned.tickets) == 1


def test_expired_lease_goes_to_next_agent_and_late_submit_is_rejected(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("only")])
    a = claim(ticketing.stub, t, "agent-a")
    ticketing.clock.advance(timedelta(minutes=16))  # default lease is 15 minutes
    b = claim(ticketing.stub, t, "agent-b")
    assert b.ticket.id == a.ticket.id
    assert b.lease.claim_token != a.lease.claim_token
    assert b.ticket.failure_count == 1
    assert b.ticket.last_failure_reason == "lease expired"
    submit(ticketing.stub, t, b, '{"by": "b"}')

    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, a.ticket.id) as caught:
        submit(ticketing.stub, t, a, '{"by": "a"}')
    assert error_info(caught[0]).reason in {"LEASE_NOT_HELD", "STALE_CLAIM_TOKEN"}
    final = get(ticketing.stub, t, a.ticket.id)
    assert final.state == pb.TICKET_STATE_DONE
    assert final.result_json == '{"by":"b"}'


def test_stale_token_cannot_touch_a_reassigned_ticket(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("only")])
    a = claim(ticketing.stub, t, "agent-a")
    ticketing.clock.advance(timedelta(minutes=16))
    b = claim(ticketing.stub, t, "agent-b")
    before = get(ticketing.stub, t, b.ticket.id)
    calls = [
        lambda: ticketing.stub.RenewLease(
            pb.RenewLeaseRequest(tenant_id=t, ticket_id=a.ticket.id, claim_token=a.lease.claim_token)
        ),
        lambda: ticketing.stub.StartWork(
            pb.StartWorkRequest(tenant_id=t, ticket_id=a.ticket.id, claim_token=a.lease.claim_token)
        ),
        lambda: ticketing.stub.ReportFailure(
            pb.ReportFailureRequest(
                tenant_id=t, ticket_id=a.ticket.id, claim_token=a.lease.claim_token, reason="x"
            )
        ),
        lambda: ticketing.stub.ReleaseClaim(
            pb.ReleaseClaimRequest(tenant_id=t, ticket_id=a.ticket.id, claim_token=a.lease.claim_token)
        ),
    ]
    for call in calls:
        with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "claimed by another agent"):
            call()
    assert get(ticketing.stub, t, b.ticket.id) == before


def test_heartbeats_keep_a_lease_alive_past_its_first_expiry(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("only")])
    a = claim(ticketing.stub, t, "agent-a")
    for step in range(1, 5):  # 4 x 10 min = 40 min, well past the 15-minute lease
        ticketing.clock.advance(timedelta(minutes=10))
        renewed = ticketing.stub.RenewLease(
            # A working agent's steps rise (one that only heartbeats is released as stale: test_stale).
            pb.RenewLeaseRequest(
                tenant_id=t, ticket_id=a.ticket.id, claim_token=a.lease.claim_token, progress=step
            )
        )
        assert renewed.lease.expire_time.ToDatetime() > ticketing.clock.now().replace(tzinfo=None)
        assert not claim(ticketing.stub, t, "agent-b").HasField("ticket")
    assert ticketing.app.reaper.run_once() == 0
    done = submit(ticketing.stub, t, a)
    assert done.ticket.state == pb.TICKET_STATE_DONE
    assert done.ticket.failure_count == 0


def test_expired_lease_cannot_be_renewed(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("only")])
    a = claim(ticketing.stub, t, "agent-a")
    ticketing.clock.advance(timedelta(minutes=15, seconds=1))
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "expired"):
        ticketing.stub.RenewLease(
            pb.RenewLeaseRequest(tenant_id=t, ticket_id=a.ticket.id, claim_token=a.lease.claim_token)
        )


def test_requested_lease_duration_is_honoured_and_bounded(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("a")])
    c = ticketing.stub.ClaimTicket(
        pb.ClaimTicketRequest(tenant_id=t, agent_id="a", lease_duration=Duration(seconds=30))
    )
    expected = ticketing.clock.now() + timedelta(seconds=30)
    assert c.lease.expire_time.ToDatetime() == expected.replace(tzinfo=None)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "lease_duration"):
        ticketing.stub.ClaimTicket(
            pb.ClaimTicketRequest(tenant_id=t, agent_id="a", lease_duration=Duration(seconds=86400))
        )


def test_retried_submit_is_answered_without_error(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("a")])
    c = claim(ticketing.stub, t, "agent")
    first = submit(ticketing.stub, t, c, '{"n": 1}')
    again = submit(ticketing.stub, t, c, '{"n": 1}')
    assert again.ticket.state == first.ticket.state == pb.TICKET_STATE_DONE
    events = ticketing.stub.ListTicketEvents(pb.ListTicketEventsRequest(tenant_id=t, ticket_id=c.ticket.id))
    assert [e.event_type for e in events.events].count("completed") == 1


def test_stages_pass_the_ticket_from_coder_to_reviewer(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("a", stages=[pb.AGENT_ROLE_CODER, REVIEWER])])
    assert not claim(ticketing.stub, t, "r", role=REVIEWER).HasField("ticket")
    coder = claim(ticketing.stub, t, "c", role=pb.AGENT_ROLE_CODER)
    assert coder.stage == pb.AGENT_ROLE_CODER
    after_code = submit(ticketing.stub, t, coder, '{"branch": "swarm/a"}')
    assert after_code.ticket.state == pb.TICKET_STATE_READY
    assert after_code.ticket.stage_index == 1
    assert not claim(ticketing.stub, t, "c2", role=pb.AGENT_ROLE_CODER).HasField("ticket")
    reviewer = claim(ticketing.stub, t, "r", role=REVIEWER)
    assert reviewer.ticket.id == coder.ticket.id and reviewer.stage == REVIEWER
    assert submit(ticketing.stub, t, reviewer).ticket.state == pb.TICKET_STATE_DONE


def test_release_returns_ticket_without_counting_a_failure(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("a")])
    c = claim(ticketing.stub, t, "agent")
    released = ticketing.stub.ReleaseClaim(
        pb.ReleaseClaimRequest(tenant_id=t, ticket_id=c.ticket.id, claim_token=c.lease.claim_token)
    ).ticket
    assert released.state == pb.TICKET_STATE_READY and released.failure_count == 0
    assert not released.HasField("lease")
    assert claim(ticketing.stub, t, "other").ticket.id == c.ticket.id


def test_release_agent_claims_frees_every_lease_of_that_agent(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec(str(i)) for i in range(4)])
    mine = [claim(ticketing.stub, t, "doomed").ticket.id for _ in range(2)]
    theirs = claim(ticketing.stub, t, "healthy").ticket.id
    out = ticketing.stub.ReleaseAgentClaims(
        pb.ReleaseAgentClaimsRequest(tenant_id=t, agent_id="doomed", reason="missed heartbeats")
    )
    assert sorted(out.released_ticket_ids) == sorted(mine)
    for tid in mine:
        tk = get(ticketing.stub, t, tid)
        assert tk.state == pb.TICKET_STATE_READY
        assert tk.failure_count == 1
        assert "missed heartbeats" in tk.last_failure_reason
    assert get(ticketing.stub, t, theirs).state == pb.TICKET_STATE_ASSIGNED
