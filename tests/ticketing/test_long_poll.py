"""ClaimTicket's long poll: parked claims, woken by tickets that become ready,
on SQLite and PostgreSQL, through the real gRPC server."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf.duration_pb2 import Duration

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarm_ticketing.longpoll import MAX_WAIT, wait_from_proto
from swarm_ticketing.matching import PollFilter
from swarm_ticketing.stores.claims import ClaimRequest
from swarmcommon.db import create_engine
from swarmcommon.grpcclient import channel
from tests.support.harness import BACKENDS, TicketingHarness, start_ticketing
from tests.support.status import raises_status
from tests.support.ticketing import REVIEWER, claim, create_project, get, spec, submit, tenant
from tests.support.waiting import eventually


def _wait(seconds: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(seconds=seconds))
    return d


def park(
    stub: pb_grpc.TicketingServiceStub, tenant_id: str, agent: str, wait: float, *, role: int = 0
) -> grpc.Future:
    """A long-poll ClaimTicket in flight (a future: cancel() hangs up)."""
    return stub.ClaimTicket.future(
        pb.ClaimTicketRequest(
            tenant_id=tenant_id, agent_id=agent, role=role, wait_duration=_wait(wait), request_id=agent
        ),
        timeout=wait + 10,
    )


def parked(ticketing: TicketingHarness, n: int) -> None:
    eventually(lambda: len(ticketing.app.pollers) == n, what=f"{n} parked pollers")


@BACKENDS
def test_a_parked_claim_takes_a_ticket_created_after_it_parked(ticketing: TicketingHarness) -> None:
    t = tenant()
    call = park(ticketing.stub, t, "agent-a", wait=20)
    parked(ticketing, 1)
    # Made ready after the poller parked, by the service's clock: whether the
    # wake or the poller's own first look (still running) takes it, it is a
    # ticket handed to a waiting poller.
    ticketing.clock.advance(timedelta(milliseconds=1))
    started = time.monotonic()
    created = create_project(ticketing.stub, t, [spec("only")])
    reply = call.result()
    assert reply.ticket.id == created.tickets[0].id
    assert reply.lease.agent_id == "agent-a"
    assert time.monotonic() - started < 5, "woken by the ticket, not by the end of its wait"
    assert get(ticketing.stub, t, reply.ticket.id).state == pb.TICKET_STATE_ASSIGNED
    stats = ticketing.stub.GetClaimStats(pb.GetClaimStatsRequest())
    assert (stats.parked_pollers, stats.sync_matched_claims, stats.backlog_claims) == (0, 1, 0)
    assert stats.sync_match_rate == 1.0
    assert 0 <= stats.ready_to_claimed_p50_ms <= stats.ready_to_claimed_p99_ms


@BACKENDS
def test_200_parked_pollers_and_100_concurrent_tickets_each_given_once(ticketing: TicketingHarness) -> None:
    t = tenant()
    channels = [channel(ticketing.target) for _ in range(8)]
    stubs = [pb_grpc.TicketingServiceStub(ch) for ch in channels]
    wait = 8.0
    try:
        calls = {f"agent-{i}": park(stubs[i % 8], t, f"agent-{i}", wait) for i in range(200)}
        parked(ticketing, 200)
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            made = list(
                pool.map(lambda i: create_project(stubs[i % 8], t, [spec(f"t{i}")], f"p{i}"), range(100))
            )
        created = {p.tickets[0].id for p in made}
        replies = {agent: call.result(timeout=wait + 5) for agent, call in calls.items()}
        ended = time.monotonic() - started
    finally:
        for ch in channels:
            ch.close()
    given = Counter(r.ticket.id for r in replies.values() if r.HasField("ticket"))
    assert set(given) == created, "every ticket was handed out"
    assert max(given.values()) == 1, "no ticket was handed out twice"
    assert sum(1 for r in replies.values() if not r.HasField("ticket")) == 100
    assert ended < wait + 3, "no poller outlived its wait"
    for agent, reply in replies.items():
        if reply.HasField("ticket"):
            lease = get(ticketing.stub, t, reply.ticket.id).lease
            assert (lease.agent_id, lease.claim_token) == (agent, reply.lease.claim_token)
    assert len(ticketing.app.pollers) == 0


@BACKENDS
def test_a_wait_ends_with_an_empty_answer_at_its_deadline(ticketing: TicketingHarness) -> None:
    started = time.monotonic()
    reply = park(ticketing.stub, tenant(), "agent-a", wait=0.6).result()
    elapsed = time.monotonic() - started
    assert not reply.HasField("ticket")
    assert 0.55 <= elapsed < 3
    assert len(ticketing.app.pollers) == 0


@BACKENDS
def test_a_wait_longer_than_the_callers_deadline_ends_before_it(ticketing: TicketingHarness) -> None:
    request = pb.ClaimTicketRequest(tenant_id=tenant(), agent_id="agent-a", wait_duration=_wait(30))
    started = time.monotonic()
    reply = ticketing.stub.ClaimTicket(request, timeout=1.0)
    assert not reply.HasField("ticket")
    assert time.monotonic() - started < 2


@BACKENDS
def test_a_cancelled_long_poll_does_not_take_a_ticket(ticketing: TicketingHarness) -> None:
    t = tenant()
    gone = park(ticketing.stub, t, "agent-gone", wait=20)
    parked(ticketing, 1)
    waiting = park(ticketing.stub, t, "agent-waiting", wait=20)
    parked(ticketing, 2)
    assert gone.cancel()
    parked(ticketing, 1)
    created = create_project(ticketing.stub, t, [spec("only")])
    reply = waiting.result()
    assert reply.ticket.id == created.tickets[0].id
    assert reply.lease.agent_id == "agent-waiting"
    events = ticketing.stub.ListTicketEvents(
        pb.ListTicketEventsRequest(tenant_id=t, ticket_id=reply.ticket.id)
    )
    assert "agent-gone" not in str(events)


@BACKENDS
def test_parked_pollers_are_served_oldest_first(ticketing: TicketingHarness) -> None:
    t = tenant()
    calls = []
    for i in range(3):
        calls.append(park(ticketing.stub, t, f"agent-{i}", wait=3))
        parked(ticketing, i + 1)
    create_project(ticketing.stub, t, [spec("one")])
    assert calls[0].result().HasField("ticket")
    assert not calls[1].result().HasField("ticket")
    assert not calls[2].result().HasField("ticket")


@BACKENDS
def test_a_ready_ticket_wakes_only_a_poller_of_its_role(ticketing: TicketingHarness) -> None:
    t = tenant()
    reviewer = park(ticketing.stub, t, "reviewer", wait=20, role=REVIEWER)
    parked(ticketing, 1)
    coder = park(ticketing.stub, t, "coder", wait=20, role=pb.AGENT_ROLE_CODER)
    parked(ticketing, 2)
    created = create_project(ticketing.stub, t, [spec("a", stages=[pb.AGENT_ROLE_CODER, REVIEWER])])
    first = coder.result()
    assert first.ticket.id == created.tickets[0].id
    assert not reviewer.done()
    # Its coder stage submitted, the ticket is ready for review: the reviewer is woken.
    submit(ticketing.stub, t, first)
    second = reviewer.result()
    assert second.ticket.id == created.tickets[0].id
    assert second.stage == REVIEWER
    assert ticketing.app.pollers.stats.sync == 2


@BACKENDS
def test_a_submitted_parent_wakes_a_poller_for_its_child(ticketing: TicketingHarness) -> None:
    t = tenant()
    created = create_project(ticketing.stub, t, [spec("parent"), spec("child", depends_on=["parent"])])
    parent = claim(ticketing.stub, t, "agent-a")
    waiting = park(ticketing.stub, t, "agent-b", wait=20)
    parked(ticketing, 1)
    submit(ticketing.stub, t, parent)
    assert waiting.result().ticket.id == created.tickets[1].id
    stats = ticketing.stub.GetClaimStats(pb.GetClaimStatsRequest())
    # The parent was waiting when agent-a asked (backlog); the child was handed over.
    assert (stats.sync_matched_claims, stats.backlog_claims, stats.sync_match_rate) == (1, 1, 0.5)


@BACKENDS
def test_a_lease_expiry_wakes_a_parked_poller(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("only")])
    held = claim(ticketing.stub, t, "agent-a")
    waiting = park(ticketing.stub, t, "agent-b", wait=20)
    parked(ticketing, 1)
    # Its first look done (it found nothing): a look still running when the
    # lease runs out would take the ticket over itself, not be woken for it.
    eventually(lambda: ticketing.app.pollers.has_looked(PollFilter(t, None, None)), what="the first look")
    ticketing.clock.advance(timedelta(hours=1))  # agent-a's lease ran out
    assert ticketing.app.reaper.run_once() >= 1
    reply = waiting.result()
    assert reply.ticket.id == held.ticket.id
    assert reply.lease.agent_id == "agent-b"


@BACKENDS
def test_a_wait_is_capped(ticketing: TicketingHarness) -> None:
    assert (
        wait_from_proto(pb.ClaimTicketRequest(wait_duration=Duration(seconds=3600)))
        == MAX_WAIT.total_seconds()
    )
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "wait_duration"):
        ticketing.stub.ClaimTicket(
            pb.ClaimTicketRequest(tenant_id=tenant(), agent_id="a", wait_duration=Duration(seconds=-5))
        )


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_a_ticket_created_on_one_process_wakes_a_poller_parked_on_another(db: str) -> None:
    one, two = start_ticketing(db), start_ticketing(db, migrate_on_start=False)
    try:
        for app in (one.app, two.app):
            assert app.listener is not None and app.listener.listening.wait(10)
        t = tenant()
        call = park(two.stub, t, "agent-on-two", wait=20)
        parked(two, 1)
        started = time.monotonic()
        created = create_project(one.stub, t, [spec("only")])
        reply = call.result()
        assert reply.ticket.id == created.tickets[0].id
        # Woken through NOTIFY (a look of the backstop's would not count as sync).
        assert time.monotonic() - started < 5
        assert two.app.pollers.stats.sync == 1
    finally:
        two.stop()
        one.stop()


@BACKENDS
def test_a_ticket_ready_without_a_wake_is_found_by_the_backstop(db: str) -> None:
    """A wake can be lost (a NOTIFY while another process's listener was
    reconnecting): parked pollers still look now and then."""
    ticketing = start_ticketing(db, claim_recheck_seconds=0.5)
    try:
        t = tenant()
        create_project(ticketing.stub, t, [spec("only")])
        held = claim(ticketing.stub, t, "agent-a")
        waiting = park(ticketing.stub, t, "agent-b", wait=20)
        parked(ticketing, 1)
        # Back to READY behind ticketing's back: no commit hook, no NOTIFY.
        engine = create_engine(db, pool_size=1)
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE tickets SET state = 'ready', claim_token = NULL WHERE id = :id"),
                {"id": held.ticket.id},
            )
        engine.dispose()
        reply = waiting.result(timeout=10)
        assert reply.ticket.id == held.ticket.id
        assert reply.lease.agent_id == "agent-b"
        assert ticketing.app.pollers.stats.sync == 0, "found by looking, not handed over"
    finally:
        ticketing.stop()


@BACKENDS
def test_a_claim_whose_caller_went_away_rolls_back(ticketing: TicketingHarness) -> None:
    """The race a cancelled long poll can lose: its claim already running in
    the thread pool when the caller hangs up. Asked just before the commit,
    the claim rolls back and the ticket stays ready, with nothing recorded."""
    t = tenant()
    created = create_project(ticketing.stub, t, [spec("only")]).tickets[0].id
    claims = ticketing.app.stores.claims
    assert claims.claim(ClaimRequest(tenant_id=t, agent_id="agent-gone"), wanted=lambda: False) is None
    assert get(ticketing.stub, t, created).state == pb.TICKET_STATE_READY
    events = ticketing.stub.ListTicketEvents(pb.ListTicketEventsRequest(tenant_id=t, ticket_id=created))
    assert [e.event_type for e in events.events] == ["created"]
    taken = claim(ticketing.stub, t, "agent-b")
    assert (taken.ticket.id, taken.lease.agent_id) == (created, "agent-b")


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_a_malformed_notification_does_not_stop_the_listener(db: str) -> None:
    """Anyone with the database can NOTIFY on the channel: junk is ignored and
    the next real notification still wakes the poller."""
    one, two = start_ticketing(db), start_ticketing(db, migrate_on_start=False)
    try:
        for app in (one.app, two.app):
            assert app.listener is not None and app.listener.listening.wait(10)
        engine = create_engine(db, pool_size=1)
        with engine.begin() as conn:
            for junk in ["not json", "[1, 2]", '{"ready": [["t"]]}', '{"ready": 5}']:
                conn.execute(
                    sa.text("SELECT pg_notify(left('swarm_ready:' || current_schema(), 63), :junk)"),
                    {"junk": junk},
                )
        engine.dispose()
        t = tenant()
        call = park(two.stub, t, "agent-on-two", wait=20)
        parked(two, 1)
        created = create_project(one.stub, t, [spec("only")])
        assert call.result().ticket.id == created.tickets[0].id
        assert two.app.pollers.stats.sync == 1
        assert two.app.listener is not None and two.app.listener.listening.is_set()
    finally:
        two.stop()
        one.stop()
