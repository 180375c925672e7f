"""The event log: idempotent intake from outbox relays (with the fan-out to
subscribed webhooks in the same transaction), tenant-scoped reads, and the
arrival-ordered reads live streams follow."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from swarm_events.domain import DeliveryStatus, Event, WebhookState, is_subscribed
from swarm_events.tables import deliveries, events, webhooks
from swarmcommon import keyset
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import NotFound
from swarmcommon.pagination import Page

E = events


def to_event(row: Any) -> Event:
    m = row._mapping
    return Event(
        id=m["event_id"],
        tenant_id=m["tenant_id"],
        type=m["type"],
        source=m["source"],
        subject=m["subject"],
        data=json.loads(m["data"]),
        traceparent=m["traceparent"],
        created_at=m["created_at"],
    )


class EventLog:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._insert = postgresql.insert if db.is_postgres else sqlite.insert
        # Called after a publish that stored something (live streams and the
        # dispatcher wake up).
        self.listeners: list[Callable[[], None]] = []

    def publish(self, batch: Sequence[Event]) -> tuple[list[str], list[str]]:
        """Store new events; an id already stored is a duplicate (first copy wins)."""

        def tx(conn: Connection) -> tuple[list[str], list[str]]:
            now = self.clock.now()
            rows = [
                {
                    "event_id": e.id,
                    "tenant_id": e.tenant_id,
                    "type": e.type,
                    "source": e.source,
                    "subject": e.subject,
                    "data": json.dumps(e.data, separators=(",", ":")),
                    "traceparent": e.traceparent,
                    "created_at": e.created_at,
                    "received_at": now,
                }
                for e in batch
            ]
            # One statement for the batch; ids already stored come back as nothing.
            stmt = self._insert(E).values(rows).on_conflict_do_nothing(index_elements=[E.c.event_id])
            stored = {r.event_id for r in conn.execute(stmt.returning(E.c.event_id))}
            accepted = [e.id for e in batch if e.id in stored]
            _fan_out(conn, [e for e in batch if e.id in stored], now)
            return accepted, [e.id for e in batch if e.id not in stored]

        accepted, duplicates = self.db.transaction(tx)
        if accepted:
            for listener in self.listeners:
                listener()
        return accepted, duplicates

    def get(self, event_id: str) -> Event:
        row = self.db.transaction(
            lambda conn: conn.execute(sa.select(E).where(E.c.event_id == event_id)).first(), write=False
        )
        if row is None:
            raise NotFound(f"event {event_id} not found", resource_type="event", resource_name=event_id)
        return to_event(row)

    def list_events(
        self,
        tenant_id: str,
        types: Sequence[str],
        subject: str | None,
        start: datetime | None,
        end: datetime | None,
        page_size: int,
        page_token: str,
    ) -> Page[Event]:
        query = sa.select(E).where(E.c.tenant_id == tenant_id)
        if types:
            query = query.where(E.c.type.in_(list(types)))
        if subject:
            query = query.where(E.c.subject == subject)
        if start:
            query = query.where(E.c.created_at >= start)
        if end:
            query = query.where(E.c.created_at < end)
        filters = ["events", tenant_id, sorted(types), subject, start, end]
        return keyset.listing(
            self.db, query, [E.c.seq], filters, page_size, page_token, to_event, descending=True
        )

    def arrivals(
        self, tenant_id: str, types: set[str], since: datetime, by_arrival: bool, after: int, limit: int
    ) -> list[tuple[int, datetime, Event]]:
        """(seq, received_at, event) of the tenant's events since `since`
        (arrival time, or creation time when replaying), in arrival order,
        after `after`."""
        column = E.c.received_at if by_arrival else E.c.created_at
        query = sa.select(E).where(E.c.tenant_id == tenant_id, column >= since, E.c.seq > after)
        if types:
            query = query.where(E.c.type.in_(sorted(types)))
        query = query.order_by(E.c.seq).limit(limit)
        rows = self.db.transaction(lambda conn: conn.execute(query).all(), write=False)
        return [(r.seq, r.received_at, to_event(r)) for r in rows]


def _fan_out(conn: Connection, stored: Sequence[Event], now: datetime) -> None:
    """One pending delivery per (new event, active webhook subscribed to its type)."""
    rows = []
    for tenant_id in {e.tenant_id for e in stored}:
        hooks = conn.execute(
            sa.select(webhooks.c.id, webhooks.c.event_types).where(
                webhooks.c.tenant_id == tenant_id, webhooks.c.state == WebhookState.ACTIVE
            )
        ).all()
        subscribed = [(h.id, json.loads(h.event_types)) for h in hooks]
        for e in (e for e in stored if e.tenant_id == tenant_id):
            rows += [
                {
                    "id": str(uuid.uuid4()),
                    "tenant_id": tenant_id,
                    "webhook_id": hook_id,
                    "event_id": e.id,
                    "status": DeliveryStatus.PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for hook_id, types in subscribed
                if is_subscribed(types, e.type)
            ]
    if rows:
        conn.execute(sa.insert(deliveries), rows)
