"""Transactional outbox: an event row commits with the state change it
describes, in the same transaction, or not at all (DESIGN invariant 5).

Every producing service adds `outbox_table(metadata)` and
`outbox_dead_letter_table(metadata)` to its schema, calls `OutboxWriter.add`
inside the transaction that changes state, and runs an `OutboxRelay` that
ships the rows to the events service.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
import sqlalchemy as sa
from google.protobuf import json_format
from opentelemetry import propagate
from sqlalchemy.engine import Connection

from swarmcommon.clock import Clock, SystemClock
from swarmcommon.db import Database, UTCDateTime
from swarmcommon.errors import SwarmError
from swarmcommon.limits import MAX_EVENT_DATA_BYTES, MAX_PUBLISH_BATCH_BYTES
from swarmcommon.periodic import Periodic
from swarmcommon.tls import ClientTls

log = logging.getLogger(__name__)

AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The alert a producer emits, through its own outbox, when it dead-letters an
# event: the tenant's webhooks and live stream hear that an event was lost.
DEAD_LETTERED_EVENT = "outbox.dead_lettered"

# Refusals that no retry can fix: the event itself is wrong or too large.
_PERMANENT = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
)
# Refusals about one event rather than about us: an event type this service
# does not own (PERMISSION_DENIED for it alone; a wrong certificate is
# PERMISSION_DENIED too, but for every batch, and stays an outage).
_PERMANENT_REASONS = frozenset({"EVENT_TYPE_NOT_OWNED"})


def _event_columns() -> list[sa.Column[Any]]:
    return [
        # Stable across retries; becomes the webhook-id receivers dedupe on.
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        # W3C trace context of the transaction that produced the event.
        sa.Column("traceparent", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
    ]


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "outbox",
        metadata,
        # Monotonic within a database: the relay ships in this order.
        sa.Column("id", AUTO_ID, primary_key=True, autoincrement=True),
        *_event_columns(),
    )


def outbox_dead_letter_table(metadata: sa.MetaData) -> sa.Table:
    """Events the events service refused for good (too large, malformed): kept
    here with the reason instead of blocking every later event."""
    return sa.Table(
        "outbox_dead_letters",
        metadata,
        sa.Column("id", AUTO_ID, primary_key=True),
        *_event_columns(),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("dead_lettered_at", UTCDateTime, nullable=False),
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
        traceparent = current_traceparent()
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


def current_traceparent() -> str | None:
    """The W3C traceparent of the span in force: an outbox row carries it so
    the delivery continues the trace of the call that caused it."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


@dataclass
class RelayStats:
    shipped: int = 0
    dead_lettered: int = 0


class OutboxRelay(Periodic):
    """Ships outbox rows to the events service, oldest first, in batches
    bounded by count and by bytes.

    A row is deleted only after events.Publish acknowledged it, so a crash at
    any point re-sends rather than loses (at-least-once); Publish is
    idempotent on the event id, so a re-send is harmless. Several relays over
    one outbox (replicas) may send a row twice, never lose one.

    An event that can never be published (larger than the events service
    takes, or refused as malformed) must not block the ones behind it: it is
    moved to `outbox_dead_letters` with the reason, logged as an alert, and an
    `outbox.dead_lettered` event naming it is relayed in its place. A refused
    batch is retried one event at a time to find the one at fault. Anything
    else (events down, slow) keeps the rows and backs off.
    """

    name = "outbox-relay"

    def __init__(
        self,
        db: Database,
        table: sa.Table,
        dead_letters: sa.Table,
        target: str,
        *,
        batch: int = 200,
        max_batch_bytes: int = MAX_PUBLISH_BATCH_BYTES,
        max_event_bytes: int = MAX_EVENT_DATA_BYTES,
        interval: float = 0.5,
        timeout: float = 10.0,
        clock: Clock | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        super().__init__(interval, max_backoff=10.0)
        # Imported here: only relaying services need the events contract.
        from swarmcommon.clients import EventsClient

        self.db = db
        self.table = table
        self.dead_letters = dead_letters
        self.batch = batch
        self.max_batch_bytes = max_batch_bytes
        self.max_event_bytes = max_event_bytes
        self.clock = clock or SystemClock()
        self.relay_stats = RelayStats()
        self._events = EventsClient(target, default_timeout=timeout, tls=tls)
        self._one_at_a_time = False

    def run_once(self) -> bool:
        """Ship one batch; True when more rows may be waiting."""
        rows = self.db.transaction(
            lambda conn: conn.execute(
                sa.select(self.table)
                .order_by(self.table.c.id)
                .limit(1 if self._one_at_a_time else self.batch)
            ).all(),
            write=False,
        )
        if not rows:
            self._one_at_a_time = False
            return False
        chunk: list[tuple[Any, Any]] = []
        size = 0
        for row in rows:
            try:
                event = _to_proto(row)
            except (ValueError, json_format.Error) as exc:  # a payload that is not a JSON object
                if not chunk:
                    self._dead_letter(row, f"payload cannot be sent: {exc}")
                break
            event_bytes, data_bytes = event.ByteSize(), event.data.ByteSize()
            if data_bytes > self.max_event_bytes:
                if not chunk:
                    limit = self.max_event_bytes
                    self._dead_letter(row, f"event data is {data_bytes} bytes, over the limit of {limit}")
                break  # ship what came before it first, in order
            if chunk and size + event_bytes > self.max_batch_bytes:
                break
            chunk.append((row, event))
            size += event_bytes
        if chunk:
            self._publish(chunk)
        return True

    def drain(self) -> int:
        """Ship everything pending now; returns how many rows were acknowledged."""
        before = self.relay_stats.shipped
        while self.run_once():
            pass
        return self.relay_stats.shipped - before

    def _publish(self, chunk: Sequence[tuple[Any, Any]]) -> None:
        try:
            self._events.publish([event for _, event in chunk])
        except SwarmError as exc:
            if exc.code not in _PERMANENT and exc.reason not in _PERMANENT_REASONS:
                raise  # transient: keep the rows, back off, retry
            if len(chunk) > 1:
                log.warning(
                    "events refused a batch; retrying one event at a time",
                    extra={"loop": self.name, "reason": exc.message, "batch": len(chunk)},
                )
                self._one_at_a_time = True
                return
            self._dead_letter(chunk[0][0], f"refused by events: {exc.code.name}: {exc.message}")
            return
        self._forget([row.id for row, _ in chunk])
        self.relay_stats.shipped += len(chunk)

    def _forget(self, ids: list[int]) -> None:
        delete = sa.delete(self.table).where(self.table.c.id.in_(ids))
        self.db.transaction(lambda conn: conn.execute(delete))

    def _dead_letter(self, row: Any, reason: str) -> None:
        """Move one row out of the outbox, and stage the alert event, in one transaction."""
        now = self.clock.now()
        columns = {c.name: getattr(row, c.name) for c in self.table.columns if c.name != "id"}
        alert = {
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"swarm:dead-letter:{row.event_id}")),
            "tenant_id": row.tenant_id,
            "event_type": DEAD_LETTERED_EVENT,
            "source": row.source,
            "payload": json.dumps(
                {
                    "event_id": row.event_id,
                    "event_type": row.event_type,
                    "reason": reason[:2000],
                    "payload_bytes": len(row.payload),
                },
                separators=(",", ":"),
            ),
            "traceparent": row.traceparent,
            "created_at": now,
        }

        def tx(conn: Connection) -> None:
            moved = conn.execute(sa.delete(self.table).where(self.table.c.id == row.id)).rowcount
            if not moved:
                return  # another relay got there first
            conn.execute(
                sa.insert(self.dead_letters).values(**columns, reason=reason[:2000], dead_lettered_at=now)
            )
            if row.event_type != DEAD_LETTERED_EVENT:  # never an alert about an alert
                conn.execute(sa.insert(self.table).values(**alert))

        self.db.transaction(tx)
        self._one_at_a_time = False
        self.relay_stats.dead_lettered += 1
        log.error(
            "outbox event dead-lettered",
            extra={
                "alert": "outbox_dead_letter",
                "event_id": row.event_id,
                "event_type": row.event_type,
                "tenant_id": row.tenant_id,
                "reason": reason,
            },
        )

    def stop(self) -> None:
        super().stop()
        self._events.close()


def _to_proto(row: Any) -> Any:
    from google.protobuf import struct_pb2

    from swarm.events.v1 import events_pb2
    from swarmcommon.protos import timestamp

    data = struct_pb2.Struct()
    json_format.ParseDict(json.loads(row.payload), data)
    return events_pb2.Event(
        id=row.event_id,
        tenant_id=row.tenant_id,
        type=row.event_type,
        source=row.source,
        data=data,
        create_time=timestamp(row.created_at),
        traceparent=row.traceparent or "",
    )
