"""ClaimTicket with a wait, on the asyncio server's event loop.

A claim that finds nothing and was asked to wait parks (swarm_ticketing.
matching) until a ticket it may take becomes ready, then claims it; a wait
that ends empty answers with no ticket. Parking costs a coroutine and a
small record, not a thread: the database work of each attempt runs in the
server's thread pool, tenants taking turns (swarm_ticketing.fairness).
Every other method is the synchronous servicer's, which the server runs in
that pool too.

A parked poller looks at the database on its own only when it parks first
of its filter, or when none of its filter looked for a while (the backstop
for a wake that never came: swarm_ticketing.matching); the rest of the time
only a wake makes it try.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import grpc
from opentelemetry import propagate, trace

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing.domain import Claim
from swarm_ticketing.fairness import FairClaims
from swarm_ticketing.matching import ParkedPollers, PollFilter
from swarm_ticketing.servicer import TicketingServicer
from swarm_ticketing.stores.claims import ClaimRequest
from swarm_ticketing.stores.ready import ReadyKey
from swarmcommon import metrics
from swarmcommon.errors import InvalidArgument

MAX_WAIT = timedelta(seconds=60)
# Temporal's long-poll length: at 5,000 idle agents the re-polls when waits
# end are most of what an idle ticketing process does.
# A claim span starts when its ticket became ready, but no earlier than this
# (a ticket that waited a day for an agent is not a day-long claim).
MAX_SPAN_NS = int(MAX_WAIT.total_seconds() * 1e9)
tracer = trace.get_tracer("swarm.ticketing")
# An answer leaves this long before the caller's deadline, so that a wait
# as long as the deadline ends in an empty answer, not DEADLINE_EXCEEDED.
DEADLINE_MARGIN = 0.05


def _trace(claim: Claim) -> None:
    """A server span for a claim that took a ticket, in the ticket's trace
    (as the agent's claim span: the poll itself belongs to no trace), from
    when the ticket was ready. Empty polls get none: they would be most of
    the spans."""
    carrier = {"traceparent": claim.ticket.traceparent} if claim.ticket.traceparent else {}
    start = claim.ready_since or claim.ticket.updated_at
    now = time.time_ns()
    span = tracer.start_span(
        "/swarm.ticketing.v1.TicketingService/ClaimTicket",
        context=propagate.extract(carrier),
        kind=trace.SpanKind.SERVER,
        start_time=min(max(int(start.timestamp() * 1e9), now - MAX_SPAN_NS), now),
        attributes={
            "rpc.system": "grpc",
            "rpc.service": "swarm.ticketing.v1.TicketingService",
            "rpc.method": "ClaimTicket",
            "swarm.tenant_id": claim.ticket.tenant_id,
            "swarm.ticket_id": claim.ticket.id,
            "swarm.agent_id": claim.lease.agent_id,
        },
    )
    span.end()


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
        fair: FairClaims,
    ) -> None:
        self._servicer = servicer
        self._pollers = pollers
        self._fair = fair

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
                self._record_found(claim)
        if claim is not None:
            _trace(claim)
        metrics.TICKET_CLAIMS.labels(outcome="empty" if claim is None else "claimed").inc()
        return self._servicer.claim_reply(claim)

    async def _claim(self, req: ClaimRequest, wanted: Callable[[], bool] | None = None) -> Claim | None:
        """One attempt, when its tenant's turn comes (swarm_ticketing.fairness)."""
        return await self._fair.run(req.tenant_id, self._servicer.s.claims.claim, req, wanted)

    async def _poll(self, req: ClaimRequest, wait: float) -> Claim | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        role = req.role.value if req.role is not None else None
        filter_ = PollFilter(req.tenant_id, role, req.project_id)
        look = self._pollers.must_look(filter_)
        # Parked before the first look, so a ticket made ready while it looks wakes it.
        parked_at = self._servicer.s.claims.clock.now()
        poller = self._pollers.park(filter_, req.agent_id)
        try:
            while True:
                woken, ready_at = poller.take_wake(), poller.ready_at
                if look or woken is not None:
                    claim = await self._claim(req, poller.wanted)
                    self._pollers.looked(filter_, ready_key(claim), woken=woken is not None)
                    if claim is not None:
                        if woken is not None:  # handed over: timed from the ready ticket's commit
                            self._pollers.stats.record(True, time.monotonic() - ready_at)
                        else:
                            self._record_found(claim, parked_at)
                        return claim
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(remaining):
                        await poller.event.wait()
                except TimeoutError:
                    return None  # the wait ended; the caller asks again
                look = True  # woken: by a ticket, or to look (the backstop, wake_all)
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

    def _record_found(self, claim: Claim, parked_at: datetime | None = None) -> None:
        """A claim that found its ticket by looking: timed from when the
        ticket became ready (None for a replayed claim). Found waiting, it is
        backlog; made ready after the poller parked (its commit raced the
        poller's own look, whose wake then came too late to count), it was
        still a ticket handed to a waiting poller: sync."""
        waited, sync = None, False
        if claim.ready_since is not None:
            waited = max((claim.ticket.updated_at - claim.ready_since).total_seconds(), 0.0)
            sync = parked_at is not None and claim.ready_since > parked_at
        self._pollers.stats.record(sync, waited)
