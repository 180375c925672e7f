"""Transactional outbox: an event row commits with the state change it
describes, in the same transaction, or not at all (DESIGN invariant 5).

Every producing service adds `outbox_table(metadata)` to its schema and calls
`OutboxWriter.add` inside the transaction that changes state. The relay that
ships rows to the events service (and deletes them once acknowledged) comes
with the events service; until then rows accumulate and can be inspected.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from opentelemetry import propagate
from sqlalchemy.engine import Connection

from swarmcommon.db import Database, UTCDateTime

log = logging.getLogger(__name__)

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


class OutboxRelay:
    """Ships outbox rows to the events service, oldest first, in batches.

    A row is deleted only after events.Publish acknowledged it, so a crash at
    any point re-sends rather than loses (at-least-once); Publish is
    idempotent on the event id, so a re-send is harmless. Several relays over
    one outbox (replicas) may send a row twice, never lose one.
    """

    def __init__(
        self,
        db: Database,
        table: sa.Table,
        target: str,
        *,
        batch: int = 200,
        interval: float = 0.5,
        timeout: float = 10.0,
    ) -> None:
        # Imported here: only relaying services need the events contract.
        from swarm.events.v1 import events_pb2_grpc
        from swarmcommon.grpcclient import channel

        self.db = db
        self.table = table
        self.batch = batch
        self.interval = interval
        self.timeout = timeout
        self._channel = channel(target)
        self._stub = events_pb2_grpc.EventsServiceStub(self._channel)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Ship everything pending; returns how many rows were acknowledged."""
        shipped = 0
        while True:
            rows = self.db.transaction(
                lambda conn: conn.execute(
                    sa.select(self.table).order_by(self.table.c.id).limit(self.batch)
                ).all(),
                write=False,
            )
            if not rows:
                return shipped
            self._stub.Publish(_publish_request(rows), timeout=self.timeout)
            self._forget([r.id for r in rows])
            shipped += len(rows)

    def _forget(self, ids: list[int]) -> None:
        delete = sa.delete(self.table).where(self.table.c.id.in_(ids))
        self.db.transaction(lambda conn: conn.execute(delete))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="outbox-relay", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        delay = self.interval
        while not self._stop.wait(delay):
            try:
                self.run_once()
                delay = self.interval
            except Exception:  # events down or slow: keep the rows, back off, retry
                log.warning("outbox relay could not ship; will retry", exc_info=True)
                delay = min(delay * 2, 10.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._channel.close()


def _publish_request(rows: Sequence[Any]) -> Any:
    from google.protobuf import json_format, struct_pb2

    from swarm.events.v1 import events_pb2
    from swarmcommon.protos import timestamp

    events = []
    for r in rows:
        data = struct_pb2.Struct()
        json_format.ParseDict(json.loads(r.payload), data)
        events.append(
            events_pb2.Event(
                id=r.event_id,
                tenant_id=r.tenant_id,
                type=r.event_type,
                source=r.source,
                data=data,
                create_time=timestamp(r.created_at),
                traceparent=r.traceparent or "",
            )
        )
    return events_pb2.PublishRequest(events=events)
