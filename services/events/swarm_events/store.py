"""The event log: idempotent intake from outbox relays, tenant-scoped reads."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from swarm_events.tables import deliveries, events, webhooks
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.pagination import Page, PageToken

E = events


@dataclass(frozen=True)
class Event:
    id: str
    tenant_id: str
    type: str
    source: str
    subject: str
    data: dict[str, Any]
    traceparent: str | None
    created_at: datetime


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


class EventStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._insert = postgresql.insert if db.is_postgres else sqlite.insert
        # Called after a publish that stored something (live streams wake up).
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
            taken = set(accepted)
            self._fan_out(conn, [e for e in batch if e.id in taken], now)
            return accepted, [e.id for e in batch if e.id not in taken]

        accepted, duplicates = self.db.transaction(tx)
        if accepted:
            for listener in self.listeners:
                listener()
        return accepted, duplicates

    @staticmethod
    def _fan_out(conn: Connection, stored: Sequence[Event], now: datetime) -> None:
        """One pending delivery per (new event, active webhook subscribed to its type)."""
        rows = []
        for tenant_id in {e.tenant_id for e in stored}:
            hooks = conn.execute(
                sa.select(webhooks.c.id, webhooks.c.event_types).where(
                    webhooks.c.tenant_id == tenant_id, webhooks.c.state == "active"
                )
            ).all()
            subscribed = [(h.id, set(json.loads(h.event_types))) for h in hooks]
            for e in (e for e in stored if e.tenant_id == tenant_id):
                for hook_id, types in subscribed:
                    if e.type in types or "*" in types:
                        rows.append(
                            {
                                "id": str(uuid.uuid4()),
                                "tenant_id": tenant_id,
                                "webhook_id": hook_id,
                                "event_id": e.id,
                                "status": "pending",
                                "attempts": 0,
                                "next_attempt_at": now,
                                "created_at": now,
                                "updated_at": now,
                            }
                        )
        if rows:
            conn.execute(sa.insert(deliveries), rows)

    def get_event(self, event_id: str) -> Event:
        row = self.db.transaction(
            lambda conn: conn.execute(sa.select(E).where(E.c.event_id == event_id)).one(), write=False
        )
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
        token = PageToken(["events", tenant_id, sorted(types), subject, start, end])
        key = token.decode(page_token, (int,))
        query = sa.select(E).where(E.c.tenant_id == tenant_id)
        if types:
            query = query.where(E.c.type.in_(list(types)))
        if subject:
            query = query.where(E.c.subject == subject)
        if start:
            query = query.where(E.c.created_at >= start)
        if end:
            query = query.where(E.c.created_at < end)
        if key is not None:
            query = query.where(E.c.seq < key[0])
        query = query.order_by(E.c.seq.desc()).limit(page_size + 1)
        rows = self.db.transaction(lambda conn: conn.execute(query).all(), write=False)
        items = [to_event(r) for r in rows[:page_size]]
        nxt = token.encode([rows[page_size - 1].seq]) if len(rows) > page_size else ""
        return Page(items, nxt)
