"""The delivery loop: on each of N worker threads, take one endpoint that has
due deliveries and a free slot, claim a batch of its deliveries, send them
one by one, and record every attempt with what the retry policy makes of it.

Claiming per endpoint is what keeps endpoints apart: a worker only ever
waits on the one endpoint whose slot it holds, and `Sender.slots` lets no
endpoint hold more than its share of the workers. An attempt that runs into
its deadline ends the batch early: the rest go back to PENDING untried, so a
slow endpoint is tried one request at a time per slot instead of holding a
worker for a whole batch. Leases are renewed while a batch is worked, so
the deliveries waiting their turn are not claimed a second time.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta

from swarm_events.domain import WEBHOOK_DISABLED_EVENT, ClaimedDelivery, Event
from swarm_events.retry import RetryPolicy, decide
from swarm_events.sender import Message, Sender
from swarm_events.stores.attempts import AttemptStore, Recorded
from swarm_events.stores.deliveries import DeliveryStore
from swarm_events.stores.events import EventLog
from swarmcommon import metrics
from swarmcommon.clock import Clock
from swarmcommon.periodic import Periodic

log = logging.getLogger(__name__)

# A lease covers this many attempt deadlines, and is renewed when less than
# one deadline (plus a margin) of it is left.
LEASE_DEADLINES = 3
LEASE_MARGIN_SECONDS = 1.0


class Dispatcher(Periodic):
    name = "dispatcher"

    def __init__(
        self,
        deliveries: DeliveryStore,
        attempts: AttemptStore,
        events: EventLog,
        sender: Sender,
        policy: RetryPolicy,
        clock: Clock,
        *,
        poll: float,
        workers: int,
        batch: int = 10,
    ) -> None:
        super().__init__(poll, workers=workers, max_backoff=max(poll, 5.0), join_timeout=sender.deadline + 5)
        self.deliveries = deliveries
        self.attempts = attempts
        self.events = events
        self.sender = sender
        self.policy = policy
        self.clock = clock
        self.batch = batch
        self.lease = timedelta(seconds=sender.deadline * LEASE_DEADLINES)
        # One worker at a time looks for due work and claims it; sending is
        # what runs in parallel. Looking in turn keeps N woken workers from
        # all querying for (and racing to claim) the same new delivery.
        self._looking = threading.Lock()
        # After a look found nothing, the others skip theirs until the next
        # interval: N idle threads each querying every interval would keep
        # the interpreter busy doing nothing. A publish (wake) ends the quiet.
        self._quiet_until = 0.0

    def run_once(self) -> bool:
        """One endpoint's batch; True when there was one (more may be waiting)."""
        with self._looking:
            if time.monotonic() < self._quiet_until:
                return False
            found = self._claim_next()
        if found is None:
            return False
        webhook_id, claimed = found
        try:
            self._deliver(claimed)
        finally:
            self.sender.slots.give_back(webhook_id)
        return True

    def wake(self) -> None:
        self._quiet_until = 0.0
        super().wake()

    def stop(self) -> None:
        # Abandon requests in flight before waiting for the workers: a worker
        # must not hold shutdown for a whole attempt deadline. What they had
        # claimed goes back to PENDING (see _deliver).
        self.sender.close()
        super().stop()

    def _claim_next(self) -> tuple[str, list[ClaimedDelivery]] | None:
        """A batch of one endpoint's due deliveries, with a slot of that
        endpoint held; None (and quiet) when there is nothing to do."""
        for webhook_id in self.deliveries.due_endpoints(excluding=self.sender.slots.full()):
            if not self.sender.slots.try_take(webhook_id):
                continue
            try:
                claimed = self.deliveries.claim(webhook_id, self.batch, self.lease)
            except BaseException:
                self.sender.slots.give_back(webhook_id)
                raise
            if claimed:
                return webhook_id, claimed
            self.sender.slots.give_back(webhook_id)  # another replica was quicker
        self._quiet_until = time.monotonic() + self.interval
        return None

    def _deliver(self, claimed: Sequence[ClaimedDelivery]) -> None:
        results: list[Recorded] = []
        undeliverable: list[ClaimedDelivery] = []
        released: list[ClaimedDelivery] = []
        failing_since = claimed[0].failing_since
        lease_ends = time.monotonic() + self.lease.total_seconds()
        ended_early = False
        for i, item in enumerate(claimed):
            if item.undeliverable():
                undeliverable.append(item)
                continue
            if ended_early:  # the rest wait for another turn, untried
                released.append(item)
                continue
            lease_ends = self._keep_lease(claimed[i:], lease_ends)
            outcome = self.sender.send(_message(item))
            if outcome.aborted:  # shutting down: not the endpoint's fault
                released.append(item)
                ended_early = True
                continue
            metrics.webhook_attempt(outcome.status_code, outcome.timed_out, outcome.duration_ms / 1000)
            now = self.clock.now()
            decision = decide(self.policy, item.delivery.attempts + 1, outcome, failing_since, now)
            failing_since = decision.failing_since
            results.append(Recorded(item, outcome, decision, now))
            ended_early = outcome.timed_out or decision.disable_reason is not None
        for item, reason in self.attempts.record(results, undeliverable, released):
            self._announce_disabled(item, reason)

    def _keep_lease(self, waiting: Sequence[ClaimedDelivery], lease_ends: float) -> float:
        """Renew the lease of the deliveries still to send when it runs short."""
        if lease_ends - time.monotonic() > self.sender.deadline + LEASE_MARGIN_SECONDS:
            return lease_ends
        self.deliveries.renew([c.delivery.id for c in waiting], self.lease)
        return time.monotonic() + self.lease.total_seconds()

    def _announce_disabled(self, item: ClaimedDelivery, reason: str) -> None:
        delivery = item.delivery
        log.warning("webhook disabled", extra={"webhook_id": delivery.webhook_id, "reason": reason})
        self.events.publish(
            [
                Event(
                    id=str(uuid.uuid4()),
                    tenant_id=delivery.tenant_id,
                    type=WEBHOOK_DISABLED_EVENT,
                    source="events",
                    subject=delivery.webhook_id,
                    data={"webhook_id": delivery.webhook_id, "url": item.url, "reason": reason},
                    traceparent=None,
                    created_at=self.clock.now(),
                )
            ]
        )


def _message(item: ClaimedDelivery) -> Message:
    assert item.event_created_at is not None  # undeliverable() checked the event is there
    return Message(
        url=item.url,
        signing=item.signing,
        event_id=item.delivery.event_id,
        event_type=item.delivery.event_type,
        created_at=item.event_created_at,
        data=item.event_data,
    )
