"""Live event streams (StreamEvents, the gateway's SSE feed).

A stream follows the tenant's rows in the event log rather than an
in-memory bus, so it sees events published through any replica. Publishes
through this process wake the followers at once; others are seen at the next
poll. Rows commit out of `seq` order under concurrency, so a follower reads
a window of recent arrivals again on every poll and drops ids it has
already sent: at-least-once, ordered by arrival, never a gap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_events.store import Event, EventStore, to_event
from swarm_events.tables import events
from swarmcommon.errors import Unavailable

E = events
BATCH = 500


def _fetch(query: sa.Select[Any]) -> Callable[[Connection], list[Any]]:
    return lambda conn: list(conn.execute(query).all())


class LiveFeed:
    def __init__(
        self,
        store: EventStore,
        poll_seconds: float = 0.5,
        lookback: timedelta = timedelta(seconds=30),
        max_streams: int = 64,
    ) -> None:
        self.store = store
        self.poll = poll_seconds
        self.lookback = lookback
        self.max_streams = max_streams
        self._changed = threading.Condition()
        self._generation = 0
        self._open = 0
        self._closing = threading.Event()

    def notify(self) -> None:
        """Something was published through this process."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def close(self) -> None:
        """End every stream (server shutdown), so draining does not wait on them."""
        self._closing.set()
        self.notify()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of this process's stream places, or Unavailable when all are taken."""
        with self._changed:
            if self._open >= self.max_streams:
                raise Unavailable(
                    f"this events server already serves {self._open} live streams; retry later or "
                    "connect to another replica"
                )
            self._open += 1
        try:
            yield
        finally:
            with self._changed:
                self._open -= 1

    def follow(
        self,
        tenant_id: str,
        types: Sequence[str],
        start: datetime | None,
        is_active: Callable[[], bool],
    ) -> Iterator[Event]:
        """The tenant's events from `start` (or from now), then live, until
        `is_active` says the caller left or the feed closes."""
        # Arrival times (`received_at`) come from the store's clock, so the
        # window is measured on it too.
        wanted = set(types) - {"*"}
        since = start if start is not None else self.store.clock.now()
        by_arrival = start is None
        sent: dict[str, datetime] = {}
        while is_active() and not self._closing.is_set():
            with self._changed:
                generation = self._generation
            for row in self._read(tenant_id, wanted, since, by_arrival):
                if row.event_id in sent:
                    continue
                sent[row.event_id] = row.received_at
                yield to_event(row)
            # From here on, follow arrivals; forget ids older than the window.
            horizon = self.store.clock.now() - self.lookback
            sent = {k: t for k, t in sent.items() if t >= horizon}
            since, by_arrival = horizon, True
            with self._changed:
                if self._generation == generation:
                    self._changed.wait(self.poll)

    def _read(self, tenant_id: str, types: set[str], since: datetime, by_arrival: bool) -> Iterator[Any]:
        """The tenant's events since `since`, in arrival order, a page at a time."""
        column = E.c.received_at if by_arrival else E.c.created_at
        query = sa.select(E).where(E.c.tenant_id == tenant_id, column >= since)
        if types:
            query = query.where(E.c.type.in_(sorted(types)))
        after = 0
        while True:
            page = query.where(E.c.seq > after).order_by(E.c.seq).limit(BATCH)
            rows: list[Any] = self.store.db.transaction(_fetch(page), write=False)
            yield from rows
            if len(rows) < BATCH:
                return
            after = rows[-1].seq
