"""Parked long polls, and the tickets that wake them (Temporal's "sync match").

A ClaimTicket with a wait parks here. When a transaction commits tickets that
became ready, `wake` picks, for each of them, the oldest parked poller whose
filter admits it (its tenant, and the role and project it asked for, if any)
and wakes it; the woken poller claims through the ordinary claim, so the
lease, audit and outbox rows are a normal claim's and the database still
gives each ticket once. A poller woken while it was already trying, or that
leaves before acting on its wake (its caller went away, its wait ended),
passes the wake on to the next one, so a wake is never lost with a poller.

Everything here runs on the server's event loop; other threads (the commit
hook, the PostgreSQL listener) call `wake_threadsafe`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from opentelemetry import metrics

from swarm_ticketing.stores.ready import ReadyKey

_meter = metrics.get_meter("swarm.ticketing")
_CLAIMS = _meter.create_counter(
    "swarm.ticketing.claims",
    description="Tickets claimed, by how: handed to a parked poller (sync) or found waiting (backlog)",
)
_READY_TO_CLAIMED = _meter.create_histogram(
    "swarm.ticketing.ready_to_claimed", unit="s", description="From a ticket becoming ready to its claim"
)


class PollFilter(NamedTuple):
    tenant_id: str
    role: str | None
    project_id: str | None


def admitting(key: ReadyKey) -> tuple[PollFilter, ...]:
    """Every filter a ticket of `key` passes."""
    t, p, r = key
    return PollFilter(t, r, p), PollFilter(t, r, None), PollFilter(t, None, p), PollFilter(t, None, None)


class Poller:
    __slots__ = ("seq", "filter", "event", "woken_by", "gone")

    def __init__(self, seq: int, filter_: PollFilter) -> None:
        self.seq = seq
        self.filter = filter_
        self.event = asyncio.Event()
        # The ticket key of a wake not yet acted on.
        self.woken_by: ReadyKey | None = None
        # Its caller went away: a claim under way must not commit.
        self.gone = False

    def take_wake(self) -> ReadyKey | None:
        """The wake this poller is about to act on (None: it acts on its own)."""
        woken, self.woken_by = self.woken_by, None
        self.event.clear()
        return woken

    def wanted(self) -> bool:
        return not self.gone


@dataclass
class MatchStats:
    """How claims found their tickets, and how long tickets waited."""

    sync: int = 0
    backlog: int = 0
    wakes: int = 0
    # Recent ready -> claimed latencies, seconds.
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))

    def record(self, sync: bool, ready_to_claimed: float | None) -> None:
        if sync:
            self.sync += 1
        else:
            self.backlog += 1
        _CLAIMS.add(1, {"swarm.claim.match": "sync" if sync else "backlog"})
        if ready_to_claimed is not None:
            self.latencies.append(ready_to_claimed)
            _READY_TO_CLAIMED.record(ready_to_claimed)

    @property
    def sync_match_rate(self) -> float | None:
        total = self.sync + self.backlog
        return self.sync / total if total else None


class ParkedPollers:
    def __init__(self) -> None:
        self._queues: dict[PollFilter, dict[int, Poller]] = {}
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = MatchStats()

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def park(self, filter_: PollFilter) -> Poller:
        self._loop = asyncio.get_running_loop()
        poller = Poller(next(self._seq), filter_)
        self._queues.setdefault(filter_, {})[poller.seq] = poller
        return poller

    def leave(self, poller: Poller) -> None:
        queue = self._queues.get(poller.filter)
        if queue is not None:
            queue.pop(poller.seq, None)
            if not queue:
                del self._queues[poller.filter]
        if poller.woken_by is not None:  # woken, but gone before acting on it
            self._wake_one(poller.woken_by)

    def wake(self, ready: Mapping[ReadyKey, int]) -> None:
        for key, count in ready.items():
            for _ in range(count):
                if not self._wake_one(key):
                    break

    def wake_threadsafe(self, ready: Mapping[ReadyKey, int]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake, dict(ready))

    def wake_all_threadsafe(self) -> None:
        """Every parked poller looks again (wakes may have been missed)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for poller in self._all():
            poller.event.set()

    def _all(self) -> Iterator[Poller]:
        for queue in list(self._queues.values()):
            yield from list(queue.values())

    def _wake_one(self, key: ReadyKey) -> bool:
        """Wake the oldest idle poller a ticket of `key` passes."""
        oldest: Poller | None = None
        for filter_ in admitting(key):
            for poller in self._queues.get(filter_, {}).values():
                if poller.woken_by is None:
                    if oldest is None or poller.seq < oldest.seq:
                        oldest = poller
                    break
        if oldest is None:
            return False
        oldest.woken_by = key
        oldest.event.set()
        self.stats.wakes += 1
        return True
