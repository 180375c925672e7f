"""Failures, quarantine, the dead-letter queue and redrive."""

from __future__ import annotations

from datetime import timedelta

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarm_ticketing import server
from swarm_ticketing.config import Settings
from swarmcommon.clock import ManualClock
from swarmcommon.grpcclient import channel
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import claim, create_project, fail, get, spec, submit, tenant
from tests.support.waiting import eventually

pytestmark = BACKENDS


def test_third_failure_quarantines_and_redrive_makes_it_claimable(ticketing: TicketingHarness) -> None:
    t = tenant()
    poison = create_project(ticketing.stub, t, [spec("poison")]).tickets[0]
    for attempt in range(1, 4):
        c = claim(ticketing.stub, t, f"agent-{attempt}")
        assert c.ticket.id == poison.id
        out = fail(ticketing.stub, t, c, "Syntax error in spec")
        assert out.ticket.failure_count == attempt
        assert out.quarantined == (attempt == 3)
    assert not claim(ticketing.stub, t, "agent-4").HasField("ticket")

    dlq = ticketing.stub.ListDeadLetters(pb.ListDeadLettersRequest(tenant_id=t)).tickets
    assert [d.id for d in dlq] == [poison.id]
    assert dlq[0].state == pb.TICKET_STATE_QUARANTINED
    assert dlq[0].last_failure_reason == "Syntax error in spec"
    assert dlq[0].quarantine_reason == "Failed 3 times: Syntax error in spec"
    assert dlq[0].HasField("quarantine_time")

    redriven = ticketing.stub.RedriveTickets(
        pb.RedriveTicketsRequest(
            tenant_id=t, ticket_ids=[poison.id], operator="ops@acme", reason="spec fixed"
        )
    ).tickets
    assert redriven[0].state == pb.TICKET_STATE_READY and redriven[0].failure_count == 0
    assert ticketing.stub.ListDeadLetters(pb.ListDeadLettersRequest(tenant_id=t)).tickets == []
    again = claim(ticketing.stub, t, "agent-5")
    assert again.ticket.id == poison.id
    assert submit(ticketing.stub, t, again).ticket.state == pb.TICKET_STATE_DONE

    audit = ticketing.stub.ListTicketEvents(
        pb.ListTicketEventsRequest(tenant_id=t, ticket_id=poison.id)
    ).events
    redrive = [e for e in audit if e.event_type == "redriven"]
    assert len(redrive) == 1
    assert redrive[0].actor_type == "human" and redrive[0].actor_id == "ops@acme"
    assert redrive[0].rationale == "spec fixed"


def test_reaper_returns_expired_leases_and_quarantines_the_third(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("silent")]).tickets[0]
    for round_ in range(1, 4):
        claim(ticketing.stub, t, f"agent-{round_}")
        ticketing.clock.advance(timedelta(minutes=16))
        assert ticketing.app.reaper.run_once() == 1
        tk = get(ticketing.stub, t, ticket.id)
        assert tk.failure_count == round_
        assert tk.last_failure_reason == "lease expired"
        expected = pb.TICKET_STATE_QUARANTINED if round_ == 3 else pb.TICKET_STATE_READY
        assert tk.state == expected
    assert get(ticketing.stub, t, ticket.id).quarantine_reason == "Failed 3 times: lease expired"


def test_claim_never_rescues_a_lease_whose_loss_would_quarantine(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("flaky")]).tickets[0]
    for i in range(2):
        fail(ticketing.stub, t, claim(ticketing.stub, t, f"a{i}"), "boom")
    claim(ticketing.stub, t, "a3")
    ticketing.clock.advance(timedelta(minutes=16))
    # A third lost lease reaches max_failures: the reaper quarantines it
    # instead of the claim path handing it out a fourth time.
    assert not claim(ticketing.stub, t, "a4").HasField("ticket")
    ticketing.app.reaper.run_once()
    assert get(ticketing.stub, t, ticket.id).state == pb.TICKET_STATE_QUARANTINED


def test_redrive_is_all_or_nothing(ticketing: TicketingHarness) -> None:
    t = tenant()
    tickets = create_project(ticketing.stub, t, [spec("q"), spec("fine")]).tickets
    for i in range(3):
        fail(ticketing.stub, t, claim(ticketing.stub, t, f"a{i}"), "bad")
    quarantined = next(
        tk for tk in tickets if get(ticketing.stub, t, tk.id).state == pb.TICKET_STATE_QUARANTINED
    )
    fine = next(tk for tk in tickets if tk.id != quarantined.id)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, fine.id, "not quarantined"):
        ticketing.stub.RedriveTickets(
            pb.RedriveTicketsRequest(tenant_id=t, ticket_ids=[quarantined.id, fine.id], operator="ops")
        )
    assert get(ticketing.stub, t, quarantined.id).state == pb.TICKET_STATE_QUARANTINED


def test_dead_letters_page_through_every_quarantined_ticket(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec(str(i)) for i in range(5)])
    for _ in range(5):
        c = claim(ticketing.stub, t, "a")
        for n in range(3):
            if n:
                c = claim(ticketing.stub, t, "a")
            fail(ticketing.stub, t, c, "bad")
            ticketing.clock.advance(timedelta(seconds=1))
    seen: list[str] = []
    token = ""
    while True:
        page = ticketing.stub.ListDeadLetters(
            pb.ListDeadLettersRequest(tenant_id=t, page_size=2, page_token=token)
        )
        seen.extend(tk.id for tk in page.tickets)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 5


def test_the_reaper_returns_expired_leases_in_the_background(db: str) -> None:
    clock = ManualClock()
    app = server.start(
        Settings(database_url=db, listen_address="127.0.0.1:0", reaper_interval_seconds=0.02), clock=clock
    )
    ch = channel(f"127.0.0.1:{app.port}")
    try:
        stub = pb_grpc.TicketingServiceStub(ch)
        t = tenant()
        ticket = create_project(stub, t, [spec("silent")]).tickets[0]
        claim(stub, t, "agent-1")
        clock.advance(timedelta(minutes=16))
        back = eventually(lambda: get(stub, t, ticket.id).state == pb.TICKET_STATE_READY, what="reaped")
        assert back and get(stub, t, ticket.id).last_failure_reason == "lease expired"
        # The pass is counted once it ends (after its second transaction): the
        # ticket can be READY a moment before.
        eventually(lambda: app.reaper.stats.passes > 0, what="the reaper's pass counted")
        assert app.reaper.stats.failures == 0
    finally:
        ch.close()
        app.stop(grace=1)
    assert not app.reaper.running
