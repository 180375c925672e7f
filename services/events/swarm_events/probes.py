"""SendTestEvent: one signed sample event sent to a webhook now, through the
same bounded sender as deliveries (total deadline, capped read), and logged.

It works on a disabled webhook too, so an operator can check a fix, and it
leaves the webhook's failure run alone: a test is not a delivery. One test
send per webhook is in flight at a time; the request's thread waits at most
one attempt deadline.

With a request_id, a retry replays the logged attempt instead of sending
again. The send happens outside any transaction (a request must not hold a
database transaction open on someone else's endpoint), so two concurrent
duplicates may both send; only the first is logged and answered.
"""

from __future__ import annotations

import uuid

from swarm_events.domain import DeliveryAttempt, logged_attempt, sample_event_data
from swarm_events.sender import Message, Sender
from swarm_events.stores import requests
from swarm_events.stores.attempts import AttemptStore
from swarm_events.stores.webhooks import WebhookStore
from swarmcommon.clock import Clock
from swarmcommon.errors import QuotaExceeded


class Probes:
    def __init__(self, webhooks: WebhookStore, attempts: AttemptStore, sender: Sender, clock: Clock) -> None:
        self.webhooks = webhooks
        self.attempts = attempts
        self.sender = sender
        self.clock = clock

    def send_test(
        self, tenant_id: str, webhook_id: str, event_type: str, key: requests.RequestKey | None
    ) -> DeliveryAttempt:
        if (prior := requests.find(self.attempts.db, key, DeliveryAttempt)) is not None:
            return prior
        hook, signing = self.webhooks.signing(tenant_id, webhook_id)
        event_id, now = str(uuid.uuid4()), self.clock.now()
        with self.sender.test_slots.taken(webhook_id) as free:
            if not free:
                raise QuotaExceeded(
                    "test_sends_per_webhook",
                    1,
                    1,
                    None,
                    message=f"a test event to webhook {webhook_id} is already being sent; "
                    f"retry when it is done (at most {self.sender.deadline:g}s)",
                )
            outcome = self.sender.send(
                Message(hook.url, signing, event_id, event_type, now, sample_event_data(webhook_id))
            )
        attempt = logged_attempt(
            outcome,
            delivery_id="",  # a test send has no delivery behind it
            tenant_id=tenant_id,
            webhook_id=webhook_id,
            event_id=event_id,
            event_type=event_type,
            attempt=1,
            next_retry_at=None,
            at=now,
            test=True,
        )
        return self.attempts.record_test(attempt, key)
