"""The agent's main loop: claim -> start -> work (with heartbeats) -> submit.

Work is a callable; it raises `WorkFailed` (or any exception) to report a
failure with a reason. While it runs, a heartbeat thread renews the lease
every `heartbeat_interval`; if the lease is lost, the loop stops reporting
for that ticket (another agent owns it now) and moves on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context, propagate, trace

from swarmagent import stopping
from swarmagent.client import ClaimedTicket, LeaseLost, TicketingClient

log = logging.getLogger(__name__)
tracer = trace.get_tracer("swarmagent")

Work = Callable[[ClaimedTicket], dict[str, Any]]


class WorkFailed(Exception):
    """Raised by work to report a failure with a reason and details."""

    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details or {}


@dataclass
class LoopStats:
    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


class AgentLoop:
    def __init__(
        self,
        client: TicketingClient,
        work: Work,
        *,
        role: int = 0,
        heartbeat_interval: float = 60.0,
        idle_wait: float = 0.5,
        claim_wait: float = 60.0,
        on_event: Callable[[str, ClaimedTicket, str], None] | None = None,
    ) -> None:
        self.client = client
        self.work = work
        self.role = role
        self.heartbeat_interval = heartbeat_interval
        self.idle_wait = idle_wait
        self.claim_wait = claim_wait
        self.on_event = on_event or (lambda kind, claimed, detail: None)
        self.stats = LoopStats()

    def run(self, stop: threading.Event) -> LoopStats:
        """Work tickets until `stop` is set."""
        while not stop.is_set():
            # Empty polls are not traced (they would be most of the spans);
            # a successful claim is recorded in the ticket's trace below.
            started = time.time_ns()
            # A long poll: the server answers when a ticket is ready for us.
            claimed = self.client.claim(self.role, wait=self.claim_wait, stop=stop)
            if claimed is None:
                # An empty answer well before the wait's end (a server that
                # does not long-poll): do not spin.
                if time.time_ns() - started < self.idle_wait * 1e9:
                    stop.wait(self.idle_wait)
                continue
            self.run_one(claimed, claim_started_ns=started)
        return self.stats

    def _attributes(self, claimed: ClaimedTicket) -> dict[str, str]:
        return {
            "swarm.tenant_id": self.client.tenant_id,
            "swarm.ticket_id": claimed.id,
            "swarm.project_id": str(claimed.ticket.project_id),
            "swarm.agent_id": self.client.agent_id,
            "swarm.stage": claimed.stage_name,
        }

    def run_one(self, claimed: ClaimedTicket, claim_started_ns: int | None = None) -> None:
        # The ticket's trace context came with the lease: join its trace.
        ticket_context = propagate.extract({"traceparent": claimed.ticket.traceparent})
        token = context.attach(ticket_context)
        try:
            if claim_started_ns is not None:
                tracer.start_span(
                    "agent.claim", start_time=claim_started_ns, attributes=self._attributes(claimed)
                ).end()
            self._run_one(claimed)
        finally:
            context.detach(token)

    def _run_one(self, claimed: ClaimedTicket) -> None:
        state = stopping.WorkState()
        lost = state.lost
        done = threading.Event()
        with tracer.start_as_current_span("agent.work", attributes=self._attributes(claimed)):
            # Renewals are part of the work: the thread starts in this context.
            beat = threading.Thread(
                target=self._heartbeat, args=(claimed, done, state, context.get_current()), daemon=True
            )
            try:
                self.client.start(claimed)
                self.on_event("started", claimed, claimed.stage_name)
                beat.start()
                try:
                    with stopping.working(state):
                        result = self.work(claimed)
                finally:
                    done.set()
                    if beat.is_alive():
                        beat.join()
                if lost.is_set():
                    raise LeaseLost("lease lost during work")
                self.client.submit(claimed, result)
                self.stats.completed.append(claimed.id)
                self.on_event("submitted", claimed, claimed.stage_name)
            except (LeaseLost, stopping.LeaseGone) as exc:
                self.stats.lost.append(claimed.id)
                self.on_event("lease_lost", claimed, str(exc))
            except Exception as exc:  # the work's failure is reported, not raised
                reason = exc.reason if isinstance(exc, WorkFailed) else f"{type(exc).__name__}: {exc}"
                details = exc.details if isinstance(exc, WorkFailed) else {}
                try:
                    quarantined = self.client.fail(claimed, reason, details)
                except LeaseLost:
                    self.stats.lost.append(claimed.id)
                    return
                self.stats.failed.append(claimed.id)
                self.on_event("quarantined" if quarantined else "failed", claimed, reason)

    def _heartbeat(
        self, claimed: ClaimedTicket, done: threading.Event, state: stopping.WorkState, ctx: context.Context
    ) -> None:
        """Renew the lease every interval, reporting the work's steps so far
        (ticketing releases a lease whose work stops moving)."""
        context.attach(ctx)
        while not done.wait(self.heartbeat_interval):
            try:
                self.client.renew(claimed, progress=state.steps)
            except LeaseLost:
                state.lost.set()
                return
            except Exception:  # a missed beat is retried at the next interval
                log.warning("heartbeat failed", exc_info=True)
