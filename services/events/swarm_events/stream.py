"""Live event streams (StreamEvents, the gateway's SSE feed).

A stream follows the tenant's rows in the event log rather than an
in-memory bus, so it sees events published through any replica. Publishes
through this process wake the followers at once; others are seen at the next
poll. Rows commit out of `seq` order under concurrency, so a follower reads
a window of recent arrivals again on every poll and drops ids it has
already sent: at-least-once, ordered by arrival, never a gap.

Each stream holds a server thread, so a process serves at most
`max_streams` (UNAVAILABLE beyond: try another replica), and one tenant at
most `max_per_tenant` of them (RESOURCE_EXHAUSTED beyond), so no tenant can
take every place.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta

from swarm_events.domain import ALL_TYPES, Event
from swarm_events.stores.events import EventLog
from swarmcommon.errors import QuotaExceeded, Unavailable

BATCH = 500


class LiveFeed:
    def __init__(
        self,
        log: EventLog,
        poll_seconds: float = 0.5,
        lookback: timedelta = timedelta(seconds=30),
        max_streams: int = 64,
        max_per_tenant: int = 16,
    ) -> None:
        self.log = log
        self.poll = poll_seconds
        self.lookback = lookback
        self.max_streams = max_streams
        self.max_per_tenant = max_per_tenant
        self._changed = threading.Condition()
        self._generation = 0
        self._open = 0
        self._by_tenant: Counter[str] = Counter()
        self._closing = threading.Event()

    @property
    def open_streams(self) -> int:
        with self._changed:
            return self._open

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
    def slot(self, tenant_id: str) -> Iterator[None]:
        """Hold one of this process's stream places for `tenant_id`, or be refused."""
        with self._changed:
            self._check_room(tenant_id)
            self._open += 1
            self._by_tenant[tenant_id] += 1
        try:
            yield
        finally:
            with self._changed:
                self._open -= 1
                self._by_tenant[tenant_id] -= 1
                if self._by_tenant[tenant_id] <= 0:
                    del self._by_tenant[tenant_id]

    def _check_room(self, tenant_id: str) -> None:
        if self._open >= self.max_streams:
            raise Unavailable(
                f"this events server already serves {self._open} live streams; retry later or "
                "connect to another replica"
            )
        held = self._by_tenant[tenant_id]
        if held >= self.max_per_tenant:
            raise QuotaExceeded(
                "live_streams",
                held,
                self.max_per_tenant,
                None,
                message=f"tenant {tenant_id} already has {held} live event streams open on this server "
                f"(at most {self.max_per_tenant} per tenant); close one before opening another",
            )

    def follow(
        self,
        tenant_id: str,
        types: Sequence[str],
        start: datetime | None,
        is_active: Callable[[], bool],
    ) -> Iterator[Event]:
        """The tenant's events from `start` (or from now: the moment of this
        call, so a caller told the stream is open misses nothing published
        after), then live, until `is_active` says the caller left or the feed
        closes."""
        # Arrival times (`received_at`) come from the log's clock, so the
        # window is measured on it too.
        since = start if start is not None else self.log.clock.now()
        return self._follow(tenant_id, set(types) - {ALL_TYPES}, since, start is None, is_active)

    def _follow(
        self,
        tenant_id: str,
        wanted: set[str],
        since: datetime,
        by_arrival: bool,
        is_active: Callable[[], bool],
    ) -> Iterator[Event]:
        sent: dict[str, datetime] = {}
        while is_active() and not self._closing.is_set():
            with self._changed:
                generation = self._generation
            for received_at, event in self._read(tenant_id, wanted, since, by_arrival):
                if event.id in sent:
                    continue
                sent[event.id] = received_at
                yield event
            # From here on, follow arrivals; forget ids older than the window.
            horizon = self.log.clock.now() - self.lookback
            sent = {k: t for k, t in sent.items() if t >= horizon}
            since, by_arrival = horizon, True
            with self._changed:
                if self._generation == generation:
                    self._changed.wait(self.poll)

    def _read(
        self, tenant_id: str, types: set[str], since: datetime, by_arrival: bool
    ) -> Iterator[tuple[datetime, Event]]:
        """The tenant's events since `since`, in arrival order, a page at a time."""
        after = 0
        while True:
            page = self.log.arrivals(tenant_id, types, since, by_arrival, after, BATCH)
            for _, received_at, event in page:
                yield received_at, event
            if len(page) < BATCH:
                return
            after = page[-1][0]
