"""ClaimTicket with a wait, on the asyncio server's event loop.

A claim that finds nothing and was asked to wait parks (swarm_ticketing.
matching) until a ticket it may take becomes ready, then claims it; a wait
that ends empty answers with no ticket. Parking costs a coroutine and a
small record, not a thread: the database work of each attempt runs in the
server's thread pool. Every other method is the synchronous servicer's,
which the server runs in that pool too.

A parked poller looks at the database on its own when it parks (unless
others of its filter are parked already: swarm_ticketing.matching) and every
`recheck` seconds (the backstop for a wake that never came: a NOTIFY lost
while the listener reconnected); the rest of the time only a wake makes it
try.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import timedelta
from typing import Any

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing.domain import Claim
from swarm_ticketing.matching import ParkedPollers, PollFilter
from swarm_ticketing.servicer import TicketingServicer
from swarm_ticketing.stores.claims import ClaimRequest
from swarm_ticketing.stores.ready import ReadyKey
from swarmcommon.errors import InvalidArgument

MAX_WAIT = timedelta(seconds=30)
# An answer leaves this long before the caller's deadline, so that a wait
# as long as the deadline ends in an empty answer, not DEADLINE_EXCEEDED.
DEADLINE_MARGIN = 0.05


def ready_key(claim: Claim | None) -> ReadyKey | None:
    if claim is None:
        return None
    t = claim.ticket
    return ReadyKey(t.tenant_id, t.project_id, t.current_role.value)


def wait_from_proto(request: pb.ClaimTicketRequest) -> float:
    """The requested wait in seconds, capped at MAX_WAIT; 0 when unset."""
    if not request.HasField("wait_duration"):
        return 0.0
    d = request.wait_duration
    if d.seconds < 0 or d.nanos < 0:
        raise InvalidArgument("wait_duration", "must not be negative")
    wait: timedelta = min(d.ToTimedelta(), MAX_WAIT)
    return wait.total_seconds()


class LongPollServicer:
    """The ticketing servicer for the asyncio server: its own ClaimTicket,
    every other method the synchronous servicer's."""

    def __init__(
        self,
        servicer: TicketingServicer,
        pollers: ParkedPollers,
        executor: Executor,
        recheck_seconds: float = MAX_WAIT.total_seconds(),
    ) -> None:
        self._servicer = servicer
        self._pollers = pollers
        self._executor = executor
        self._recheck = recheck_seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._servicer, name)

    async def ClaimTicket(
        self, request: pb.ClaimTicketRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClaimTicketResponse:
        wait = wait_from_proto(request)
        claim_request = self._servicer.claim_request(request)
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, remaining - DEADLINE_MARGIN)
        if wait > 0:
            claim = await self._poll(claim_request, wait)
        else:
            claim = await self._claim(claim_request)
            if claim is not None:
                self._record(claim, sync=False)
        return self._servicer.claim_reply(claim)

    async def _claim(self, req: ClaimRequest, wanted: Callable[[], bool] | None = None) -> Claim | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._servicer.s.claims.claim, req, wanted)

    async def _poll(self, req: ClaimRequest, wait: float) -> Claim | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        role = req.role.value if req.role is not None else None
        filter_ = PollFilter(req.tenant_id, role, req.project_id)
        look = self._pollers.must_look(filter_)
        # Parked before the first look, so a ticket made ready while it looks wakes it.
        poller = self._pollers.park(filter_)
        try:
            while True:
                woken = poller.take_wake()
                if look or woken is not None:
                    claim = await self._claim(req, poller.wanted)
                    self._pollers.looked(filter_, ready_key(claim))
                    if claim is not None:
                        self._record(claim, sync=woken is not None)
                        return claim
                look = True  # from now on: when woken, and at each recheck
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(min(remaining, self._recheck)):
                        await poller.event.wait()
                except TimeoutError:
                    pass
        except asyncio.CancelledError:
            poller.gone = True  # the caller went away: a claim in flight rolls back
            raise
        finally:
            self._pollers.leave(poller)

    async def GetClaimStats(
        self, request: pb.GetClaimStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetClaimStatsResponse:
        stats = self._pollers.stats
        return pb.GetClaimStatsResponse(
            parked_pollers=len(self._pollers),
            sync_matched_claims=stats.sync,
            backlog_claims=stats.backlog,
            sync_match_rate=stats.sync_match_rate or 0.0,
            ready_to_claimed_p50_ms=(stats.percentile(0.5) or 0.0) * 1000,
            ready_to_claimed_p99_ms=(stats.percentile(0.99) or 0.0) * 1000,
        )

    def _record(self, claim: Claim, *, sync: bool) -> None:
        waited = None
        if claim.ready_since is not None:
            waited = max((claim.ticket.updated_at - claim.ready_since).total_seconds(), 0.0)
        self._pollers.stats.record(sync, waited)
