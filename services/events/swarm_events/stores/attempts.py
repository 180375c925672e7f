"""The delivery log: every attempt of a delivery recorded with what follows
from it (the delivery's next state, the webhook's failure run, disabling),
test sends, and reading the log back.

A batch's attempts are recorded in one transaction of a few statements:
one write per batch rather than three per delivery.
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
            if not results:
                return []
            # A few statements per batch, not per attempt: the deliveries'
            # new states and the log rows go in as one executemany each.
            for webhook_id, run in _runs(results):
                _update_failure_run(conn, webhook_id, run, now)
            conn.execute(_UPDATE_DELIVERY, [_delivery_values(r, now) for r in results])
            conn.execute(_INSERT_ATTEMPT, [_attempt_row(r) for r in results])
            # Last: disabling fails the webhook's other live deliveries,
            # which must not be set back to a retry by the update above.
            return [
                (r.claimed, reason)
                for r in results
                if r.decision.disable_reason
                and (reason := _disable(conn, r.claimed.delivery, r.decision.disable_reason, now))
            ]

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


_UPDATE_DELIVERY = (
    sa.update(D)
    .where(D.c.id == sa.bindparam("d_id"))
    .values(
        status=sa.bindparam("d_status"),
        attempts=sa.bindparam("d_attempts"),
        next_attempt_at=sa.bindparam("d_next"),
        updated_at=sa.bindparam("d_now"),
    )
)
_INSERT_ATTEMPT = sa.insert(A)


def _delivery_values(result: Recorded, now: datetime) -> dict[str, Any]:
    return {
        "d_id": result.claimed.delivery.id,
        "d_status": result.decision.status,
        "d_attempts": result.claimed.delivery.attempts + 1,
        "d_next": result.decision.next_attempt_at or now,
        "d_now": now,
    }


def _attempt_row(result: Recorded) -> dict[str, Any]:
    delivery = result.claimed.delivery
    return attempt_values(
        logged_attempt(
            result.outcome,
            delivery_id=delivery.id,
            tenant_id=delivery.tenant_id,
            webhook_id=delivery.webhook_id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            attempt=delivery.attempts + 1,
            next_retry_at=result.decision.next_attempt_at,
            at=result.at,
        )
    )


def _runs(results: Sequence[Recorded]) -> list[tuple[str, list[Recorded]]]:
    """The results per webhook, each in the order they were sent."""
    runs: dict[str, list[Recorded]] = {}
    for r in results:
        runs.setdefault(r.claimed.delivery.webhook_id, []).append(r)
    return list(runs.items())


def _update_failure_run(conn: Connection, webhook_id: str, run: Sequence[Recorded], now: datetime) -> None:
    """The webhook's failure run after these attempts, in one update: a
    success resets it, each failure after the last success extends it."""
    last_ok = max((i for i, r in enumerate(run) if r.outcome.ok), default=None)
    failures = len(run) - (last_ok + 1 if last_ok is not None else 0)
    values: dict[str, Any] = {}
    if last_ok is None:
        values["consecutive_failures"] = W.c.consecutive_failures + failures
    else:
        values.update(consecutive_failures=failures, last_success_at=now)
    if failures:
        values["last_failure_at"] = now
    values["failing_since"] = run[-1].decision.failing_since if failures else None
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
