"""Deliveries: claiming with a lease, redelivery and recovery (their
attempts are recorded by stores.attempts).

A delivery is claimed by moving it to DELIVERING with a lease (its
next_attempt_at): a dispatcher that dies mid-request leaves a lease that
lapses, and the delivery is claimed again (at-least-once; receivers dedupe
on `webhook-id`). Claims take one endpoint's due deliveries at a time (the
dispatcher holds a slot for that endpoint); on PostgreSQL the claim is
FOR UPDATE SKIP LOCKED, so dispatchers on several replicas share the work.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_events.domain import (
    LIVE_STATUSES,
    ClaimedDelivery,
    Delivery,
    DeliveryStatus,
    Signing,
    WebhookState,
)
from swarm_events.stores import requests
from swarm_events.stores.webhooks import load_webhook
from swarm_events.tables import deliveries, events, webhooks
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition, NotFound

D, E, W = deliveries, events, webhooks
# How many due rows are scanned to find endpoints with work.
CANDIDATE_ROWS = 200


def _delivery_columns() -> list[Any]:
    return [*D.c, E.c.type.label("event_type")]


def to_delivery(row: Any) -> Delivery:
    m = row._mapping
    return Delivery(
        id=m["id"],
        tenant_id=m["tenant_id"],
        webhook_id=m["webhook_id"],
        event_id=m["event_id"],
        event_type=m["event_type"] or "",
        status=DeliveryStatus(m["status"]),
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        created_at=m["created_at"],
    )


def _to_claimed(row: Any) -> ClaimedDelivery:
    m = row._mapping
    return ClaimedDelivery(
        delivery=to_delivery(row),
        event_data=json.loads(m["event_data"]) if m["event_data"] is not None else None,
        event_created_at=m["event_created_at"],
        webhook_state=WebhookState(m["hook_state"]) if m["hook_state"] is not None else None,
        url=m["hook_url"] or "",
        signing=Signing(m["hook_secret"] or "", m["hook_previous_secret"], m["hook_previous_expires_at"]),
        failing_since=m["hook_failing_since"],
    )


class DeliveryStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        # Called after deliveries were queued again (the dispatcher wakes up
        # instead of waiting out its quiet interval).
        self.listeners: list[Callable[[], None]] = []

    def _requeued(self) -> None:
        for listener in self.listeners:
            listener()

    # -- claiming -------------------------------------------------------------------------------

    def due_endpoints(self, excluding: Collection[str]) -> list[str]:
        """Webhooks with due deliveries, the longest-waiting first."""
        query = sa.select(D.c.webhook_id).where(
            D.c.status.in_(LIVE_STATUSES), D.c.next_attempt_at <= self.clock.now()
        )
        if excluding:
            query = query.where(D.c.webhook_id.not_in(list(excluding)))
        query = query.order_by(D.c.next_attempt_at).limit(CANDIDATE_ROWS)
        rows = self.db.transaction(lambda conn: conn.execute(query).all(), write=False)
        return list(dict.fromkeys(r.webhook_id for r in rows))

    def claim(self, webhook_id: str, limit: int, lease: timedelta) -> list[ClaimedDelivery]:
        """Up to `limit` due deliveries to one webhook, leased for `lease`."""

        def tx(conn: Connection) -> list[ClaimedDelivery]:
            now = self.clock.now()
            ids = list(
                conn.execute(
                    sa.select(D.c.id)
                    .where(
                        D.c.webhook_id == webhook_id,
                        D.c.status.in_(LIVE_STATUSES),
                        D.c.next_attempt_at <= now,
                    )
                    .order_by(D.c.next_attempt_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if not ids:
                return []
            conn.execute(
                sa.update(D)
                .where(D.c.id.in_(ids))
                .values(status=DeliveryStatus.DELIVERING, next_attempt_at=now + lease, updated_at=now)
            )
            claimed = {c.delivery.id: c for c in map(_to_claimed, conn.execute(_claimed_query(ids)).all())}
            return [claimed[i] for i in ids]  # oldest due first

        return self.db.transaction(tx)

    def renew(self, ids: Sequence[str], lease: timedelta) -> None:
        """Extend the lease of claimed deliveries still waiting for their turn."""
        if not ids:
            return
        now = self.clock.now()
        self.db.transaction(
            lambda conn: conn.execute(
                sa.update(D)
                .where(D.c.id.in_(list(ids)), D.c.status == DeliveryStatus.DELIVERING)
                .values(next_attempt_at=now + lease, updated_at=now)
            )
        )

    # -- resending ------------------------------------------------------------------------------

    def redeliver(self, tenant_id: str, delivery_id: str, key: requests.RequestKey | None) -> Delivery:
        """Queue one delivery again now, whatever its state; same event id."""
        now = self.clock.now()

        def tx(conn: Connection) -> Delivery:
            row = conn.execute(_delivery_query(tenant_id, delivery_id)).first()
            if row is None:
                raise NotFound(
                    f"delivery {delivery_id} not found", resource_type="delivery", resource_name=delivery_id
                )
            _require_active(conn, tenant_id, row.webhook_id)
            if row.event_type is None:
                raise FailedPrecondition(
                    f"event {row.event_id} of delivery {delivery_id} is past the event log's retention; "
                    "it cannot be sent again",
                    reason="EVENT_EXPIRED",
                )
            set_status(conn, [delivery_id], DeliveryStatus.PENDING, now, next_at=now)
            return to_delivery(conn.execute(_delivery_query(tenant_id, delivery_id)).one())

        delivery = requests.once(self.db, key, Delivery, now, tx)
        self._requeued()
        return delivery

    def recover(
        self, tenant_id: str, webhook_id: str, since: datetime, key: requests.RequestKey | None
    ) -> int:
        """Re-queue every failed delivery of a webhook created at or after
        `since` (whose event is still retained)."""
        now = self.clock.now()

        def tx(conn: Connection) -> int:
            _require_active(conn, tenant_id, webhook_id)
            result = conn.execute(
                sa.update(D)
                .where(
                    D.c.tenant_id == tenant_id,
                    D.c.webhook_id == webhook_id,
                    D.c.status == DeliveryStatus.FAILED,
                    D.c.created_at >= since,
                    sa.exists().where(E.c.event_id == D.c.event_id),
                )
                .values(status=DeliveryStatus.PENDING, next_attempt_at=now, updated_at=now)
            )
            return int(result.rowcount)

        count = requests.once(self.db, key, int, now, tx)
        if count:
            self._requeued()
        return count


def _claimed_query(ids: Sequence[str]) -> sa.Select[Any]:
    """Everything a claimed delivery needs, read in the claiming transaction."""
    return (
        sa.select(
            *_delivery_columns(),
            E.c.data.label("event_data"),
            E.c.created_at.label("event_created_at"),
            W.c.state.label("hook_state"),
            W.c.url.label("hook_url"),
            W.c.secret.label("hook_secret"),
            W.c.previous_secret.label("hook_previous_secret"),
            W.c.previous_secret_expires_at.label("hook_previous_expires_at"),
            W.c.failing_since.label("hook_failing_since"),
        )
        .outerjoin(E, E.c.event_id == D.c.event_id)
        .outerjoin(W, W.c.id == D.c.webhook_id)
        .where(D.c.id.in_(list(ids)))
    )


def _delivery_query(tenant_id: str, delivery_id: str) -> sa.Select[Any]:
    return (
        sa.select(*_delivery_columns())
        .outerjoin(E, E.c.event_id == D.c.event_id)
        .where(D.c.id == delivery_id, D.c.tenant_id == tenant_id)
    )


def _require_active(conn: Connection, tenant_id: str, webhook_id: str) -> None:
    hook = load_webhook(conn, tenant_id, webhook_id)
    if hook.state != WebhookState.ACTIVE:
        raise FailedPrecondition(
            f"webhook {webhook_id} is disabled ({hook.disabled_reason}); re-enable it first",
            reason="WEBHOOK_DISABLED",
        )


def set_status(
    conn: Connection,
    ids: Sequence[str],
    status: DeliveryStatus,
    now: datetime,
    next_at: datetime | None = None,
) -> None:
    if not ids:
        return
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if next_at is not None:
        values["next_attempt_at"] = next_at
    conn.execute(sa.update(D).where(D.c.id.in_(list(ids))).values(**values))
