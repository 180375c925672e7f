"""Transactional outbox: an event row commits with the state change it
describes, in the same transaction, or not at all (DESIGN invariant 5).

Every producing service adds `outbox_table(metadata)` to its schema and calls
`OutboxWriter.add` inside the transaction that changes state. The relay that
ships rows to the events service (and deletes them once acknowledged) comes
with the events service; until then rows accumulate and can be inspected.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from opentelemetry import propagate
from sqlalchemy.engine import Connection

from swarmcommon.db import UTCDateTime

AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "outbox",
        metadata,
        # Monotonic within a database: the relay ships in this order.
        sa.Column("id", AUTO_ID, primary_key=True, autoincrement=True),
        # Stable across retries; becomes the webhook-id receivers dedupe on.
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        # W3C trace context of the transaction that produced the event.
        sa.Column("traceparent", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )


@dataclass(frozen=True)
class OutboxEvent:
    tenant_id: str
    event_type: str
    data: Mapping[str, Any]
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class OutboxWriter:
    def __init__(self, table: sa.Table, source: str) -> None:
        self.table = table
        self.source = source
        self._insert = sa.insert(table)

    def add(self, conn: Connection, events: Iterable[OutboxEvent], now: datetime) -> None:
        """Stage events in the caller's open transaction."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        traceparent = carrier.get("traceparent")
        rows = [
            {
                "event_id": e.event_id,
                "tenant_id": e.tenant_id,
                "event_type": e.event_type,
                "source": self.source,
                "payload": json.dumps(dict(e.data), separators=(",", ":"), default=str),
                "traceparent": traceparent,
                "created_at": now,
            }
            for e in events
        ]
        if rows:
            conn.execute(self._insert, rows)
