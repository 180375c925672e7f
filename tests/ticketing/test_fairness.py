"""Tenants take turns at the claim slots (deficit round-robin): the scheduler
on its own, then through the real server on both backends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarm_ticketing.fairness import FairClaims, parse_weights
from swarmcommon.grpcclient import channel
from tests.support.harness import BACKENDS, TicketingHarness, start_ticketing
from tests.support.ticketing import create_project, spec, tenant
from tests.support.waiting import eventually
from tests.ticketing.test_long_poll import park


def _served(weights: dict[str, int], queued: list[str], slots: int = 1) -> list[str]:
    """The order in which claims of `queued` tenants (queued in that order,
    while one claim of "x" holds the only slot) are served."""
    order: list[str] = []
    gate = threading.Event()

    def claim(name: str) -> Callable[[], str]:
        def run() -> str:
            if name == "x":
                gate.wait(5)
            order.append(name)
            return name

        return run

    async def main() -> None:
        with ThreadPoolExecutor(4) as pool:
            fair = FairClaims(pool, slots, weights)
            blocker = asyncio.ensure_future(fair.run("x", claim("x")))
            await asyncio.sleep(0.01)
            rest = [asyncio.ensure_future(fair.run(t, claim(t))) for t in queued]
            await asyncio.sleep(0.01)
            gate.set()
            await asyncio.gather(blocker, *rest)

    asyncio.run(main())
    return order[1:]


def test_one_claim_of_a_quiet_tenant_is_served_next_not_after_a_flood() -> None:
    assert _served({}, ["a"] * 20 + ["b"])[:2] == ["a", "b"]


def test_first_come_first_served_is_what_a_single_queue_would_do() -> None:
    # Same tenant: its own order is kept.
    assert _served({}, ["a"] * 5) == ["a"] * 5


def test_weights_give_tenants_shares_of_each_round() -> None:
    assert _served({"a": 3}, ["a"] * 6 + ["b"] * 2) == ["a", "a", "a", "b", "a", "a", "a", "b"]


def test_a_claim_whose_caller_left_while_it_waited_never_runs() -> None:
    ran: list[str] = []
    gate = threading.Event()

    async def main() -> None:
        with ThreadPoolExecutor(2) as pool:
            fair = FairClaims(pool, 1)
            blocker = asyncio.ensure_future(fair.run("x", lambda: gate.wait(5)))
            await asyncio.sleep(0.01)
            gone = asyncio.ensure_future(fair.run("a", lambda: ran.append("gone")))
            kept = asyncio.ensure_future(fair.run("b", lambda: ran.append("kept")))
            await asyncio.sleep(0.01)
            gone.cancel()
            gate.set()
            await asyncio.gather(blocker, kept)
            assert fair.waiting == 0

    asyncio.run(main())
    assert ran == ["kept"]


def test_bad_weights_are_refused_naming_the_entry() -> None:
    assert parse_weights(" acme=4, globex=1 ") == {"acme": 4, "globex": 1}
    for bad in ["acme", "acme=0", "acme=x", "=3", "acme=1001"]:
        with pytest.raises(ValueError, match="tenant weight"):
            parse_weights(bad)


@BACKENDS
def test_a_flooding_tenant_does_not_starve_another_tenants_single_ticket(db: str) -> None:
    """Tenant A: 1,000 ready tickets over 50 projects and 400 agents asking
    at once; tenant B: one ticket, its agent asking just after them. B's
    claim is among the first few served after it asked, not behind A's."""
    ticketing: TicketingHarness = start_ticketing(db, claim_slots=1)
    channels = [channel(ticketing.target) for _ in range(8)]
    try:
        a, b = tenant(), tenant()
        for p in range(50):
            create_project(ticketing.stub, a, [spec(f"{p}-{i}") for i in range(20)], name=f"flood-{p}")
        single = create_project(ticketing.stub, b, [spec("single")]).tickets[0].id
        done: list[str] = []
        lock = threading.Lock()

        def note(who: str) -> Callable[[object], None]:
            def arrived(_: object) -> None:
                with lock:
                    done.append(who)

            return arrived

        stubs = [pb_grpc.TicketingServiceStub(ch) for ch in channels]
        flood = []
        for i in range(400):
            call = park(stubs[i % 8], a, f"a-{i}", wait=20)
            call.add_done_callback(note("a"))
            flood.append(call)
        # Every A call reached the server (claimed, or parked: waiting for its turn).
        eventually(lambda: len(done) + len(ticketing.app.pollers) >= 400, what="A's calls at the server")
        asked_after = len(done)
        quiet = park(stubs[0], b, "b-0", wait=20)
        quiet.add_done_callback(note("b"))
        assert quiet.result(timeout=30).ticket.id == single
        for call in flood:
            assert call.result(timeout=30).HasField("ticket")
        position = done.index("b") - asked_after
        # The claim running when B asked, those done while B's call travelled,
        # then B's turn: a single queue would have put B behind A's hundreds
        # (A's 1,000 tickets and 400 claims against one slot).
        assert position <= 8, f"B's claim was served {position} claims after it asked"
        assert len(ticketing.app.pollers) == 0
    finally:
        for ch in channels:
            ch.close()
        ticketing.stop()
