"""The delivery log: every attempt of a delivery recorded with what follows
from it (the delivery's next state, the webhook's failure run, disabling),
test sends, and reading the log back.

A batch's attempts are recorded in one transaction: one write per batch
rather than per delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_events.domain import (
    LIVE_STATUSES,
    AttemptOutcome,
    ClaimedDelivery,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Outcome,
    WebhookState,
    logged_attempt,
)
from swarm_events.retry import Decision
from swarm_events.stores import requests
from swarm_events.stores.deliveries import set_status
from swarm_events.stores.webhooks import load_webhook
from swarm_events.tables import deliveries, delivery_attempts, webhooks
from swarmcommon import keyset
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.pagination import Page

D, A, W = deliveries, delivery_attempts, webhooks


@dataclass(frozen=True)
class Recorded:
    """One attempt of a claimed delivery, and what follows from it."""

    claimed: ClaimedDelivery
    outcome: Outcome
    decision: Decision
    # When the attempt was decided: its time in the log, from which its retry is due.
    at: datetime


def to_attempt(row: Any) -> DeliveryAttempt:
    m = row._mapping
    return DeliveryAttempt(
        id=m["id"],
        delivery_id=m["delivery_id"],
        tenant_id=m["tenant_id"],
        webhook_id=m["webhook_id"],
        event_id=m["event_id"],
        event_type=m["event_type"],
        attempt=m["attempt"],
        outcome=AttemptOutcome.SUCCEEDED if m["succeeded"] else AttemptOutcome.FAILED,
        status_code=m["status_code"],
        response_body=m["response_body"],
        response_truncated=m["response_truncated"],
        error=m["error"],
        duration_ms=m["duration_ms"],
        next_retry_at=m["next_retry_at"],
        created_at=m["created_at"],
        test=m["test"],
    )


def attempt_values(a: DeliveryAttempt) -> dict[str, Any]:
    return {
        "id": a.id,
        "delivery_id": a.delivery_id,
        "tenant_id": a.tenant_id,
        "webhook_id": a.webhook_id,
        "event_id": a.event_id,
        "event_type": a.event_type,
        "attempt": a.attempt,
        "succeeded": a.outcome == AttemptOutcome.SUCCEEDED,
        "status_code": a.status_code,
        "response_body": a.response_body,
        "response_truncated": a.response_truncated,
        "error": a.error,
        "duration_ms": a.duration_ms,
        "next_retry_at": a.next_retry_at,
        "created_at": a.created_at,
        "test": a.test,
    }


class AttemptStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def record(
        self,
        results: Sequence[Recorded],
        undeliverable: Sequence[ClaimedDelivery] = (),
        released: Sequence[ClaimedDelivery] = (),
    ) -> list[tuple[ClaimedDelivery, str]]:
        """Store a batch's attempts and their consequences in one transaction.

        `undeliverable` deliveries fail without an attempt (webhook gone or
        disabled, event past retention); `released` ones go back to PENDING
        untried. Returns the deliveries whose attempt disabled their webhook,
        with the reason (each webhook once)."""

        def tx(conn: Connection) -> list[tuple[ClaimedDelivery, str]]:
            now = self.clock.now()
            set_status(conn, [c.delivery.id for c in released], DeliveryStatus.PENDING, now, next_at=now)
            set_status(conn, [c.delivery.id for c in undeliverable], DeliveryStatus.FAILED, now)
            disabled = []
            for result in results:
                if reason := _record_one(conn, result, now):
                    disabled.append((result.claimed, reason))
            return disabled

        return self.db.transaction(tx)

    def record_test(self, attempt: DeliveryAttempt, key: requests.RequestKey | None) -> DeliveryAttempt:
        """Log a test send (no delivery behind it) as the answer to its request."""

        def tx(conn: Connection) -> DeliveryAttempt:
            conn.execute(sa.insert(A).values(**attempt_values(attempt)))
            return attempt

        return requests.once(self.db, key, DeliveryAttempt, self.clock.now(), tx)

    # -- the delivery log -----------------------------------------------------------------------

    def list_attempts(
        self,
        tenant_id: str,
        webhook_id: str,
        page_size: int,
        page_token: str,
        event_id: str | None = None,
        delivery_id: str | None = None,
        outcome: AttemptOutcome | None = None,
    ) -> Page[DeliveryAttempt]:
        """The delivery log of one webhook, newest first."""
        succeeded = None if outcome is None else outcome == AttemptOutcome.SUCCEEDED
        query = sa.select(A).where(A.c.tenant_id == tenant_id, A.c.webhook_id == webhook_id)
        if event_id:
            query = query.where(A.c.event_id == event_id)
        if delivery_id:
            query = query.where(A.c.delivery_id == delivery_id)
        if succeeded is not None:
            query = query.where(A.c.succeeded == succeeded)
        filters = ["attempts", tenant_id, webhook_id, event_id, delivery_id, succeeded]

        def read(conn: Connection) -> Page[Any]:
            load_webhook(conn, tenant_id, webhook_id)  # NOT_FOUND for another tenant's webhook
            return keyset.page(conn, query, [A.c.seq], filters, page_size, page_token, descending=True)

        rows = self.db.transaction(read, write=False)
        return Page([to_attempt(r) for r in rows.items], rows.next_page_token)


def _record_one(conn: Connection, result: Recorded, now: datetime) -> str | None:
    """One attempt and its consequences; the disable reason if it disabled the webhook."""
    delivery, outcome, decision = result.claimed.delivery, result.outcome, result.decision
    attempt = delivery.attempts + 1
    _update_failure_run(conn, delivery.webhook_id, outcome.ok, decision.failing_since, now)
    disabled = _disable(conn, delivery, decision.disable_reason, now) if decision.disable_reason else None
    conn.execute(
        sa.update(D)
        .where(D.c.id == delivery.id)
        .values(
            status=decision.status,
            attempts=attempt,
            next_attempt_at=decision.next_attempt_at or now,
            updated_at=now,
        )
    )
    conn.execute(
        sa.insert(A).values(
            **attempt_values(
                logged_attempt(
                    outcome,
                    delivery_id=delivery.id,
                    tenant_id=delivery.tenant_id,
                    webhook_id=delivery.webhook_id,
                    event_id=delivery.event_id,
                    event_type=delivery.event_type,
                    attempt=attempt,
                    next_retry_at=decision.next_attempt_at,
                    at=result.at,
                )
            )
        )
    )
    return disabled


def _update_failure_run(
    conn: Connection, webhook_id: str, ok: bool, failing_since: datetime | None, now: datetime
) -> None:
    if ok:
        values: dict[str, Any] = {"consecutive_failures": 0, "last_success_at": now, "failing_since": None}
    else:
        values = {
            "consecutive_failures": W.c.consecutive_failures + 1,
            "last_failure_at": now,
            "failing_since": failing_since,
        }
    conn.execute(sa.update(W).where(W.c.id == webhook_id).values(**values))


def _disable(conn: Connection, delivery: Delivery, reason: str, now: datetime) -> str | None:
    """Disable the webhook and fail its other live deliveries; the reason,
    or None if it was disabled already (say it once)."""
    changed = conn.execute(
        sa.update(W)
        .where(W.c.id == delivery.webhook_id, W.c.state == WebhookState.ACTIVE)
        .values(state=WebhookState.DISABLED, disabled_reason=reason, disabled_at=now, updated_at=now)
    ).rowcount
    conn.execute(
        sa.update(D)
        .where(D.c.webhook_id == delivery.webhook_id, D.c.status.in_(LIVE_STATUSES), D.c.id != delivery.id)
        .values(status=DeliveryStatus.FAILED, updated_at=now)
    )
    return reason if changed else None
