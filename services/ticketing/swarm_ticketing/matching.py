"""Parked long polls, and the tickets that wake them (Temporal's "sync match").

A ClaimTicket with a wait parks here. When a transaction commits tickets that
became ready, `wake` picks, for each of them, the oldest parked poller whose
filter admits it (its tenant, and the role and project it asked for, if any)
and wakes it; the woken poller claims through the ordinary claim, so the
lease, audit and outbox rows are a normal claim's and the database still
gives each ticket once. A poller woken while it was already trying, or that
leaves before acting on its wake (its caller went away, its wait ended),
passes the wake on to the next one, so a wake is never lost with a poller.

A poller that parks behind others of the same filter does not look at the
database first: any ticket it could take would have woken one of them, so
there is none, and a claim made by a newcomer would overtake the poller
already woken for that ticket. It looks when it is the first of its filter,
when wakes found no idle poller for a ticket it could take (`surplus`: those
tickets wait in the database), for a while after wakes may have been lost
(`wake_all`), and when no poller of its filter looked for `recheck` seconds:
the slow backstop for a wake that never came, one look per filter, not one
per poller.

Everything here runs on the server's event loop; other threads (the commit
hook, the PostgreSQL listener) call `wake_threadsafe`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from opentelemetry import metrics

from swarm_ticketing.stores.ready import ReadyKey
from swarmcommon.errors import QuotaExceeded
from swarmcommon.metrics import PARKED_POLLERS

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


def admits(filter_: PollFilter, key: ReadyKey) -> bool:
    return (
        filter_.tenant_id == key.tenant_id
        and filter_.role in (None, key.role)
        and filter_.project_id in (None, key.project_id)
    )


def admitting(key: ReadyKey) -> tuple[PollFilter, ...]:
    """Every filter a ticket of `key` passes."""
    t, p, r = key
    return PollFilter(t, r, p), PollFilter(t, r, None), PollFilter(t, None, p), PollFilter(t, None, None)


class Poller:
    __slots__ = ("seq", "filter", "agent_id", "event", "woken_by", "ready_at", "gone")

    def __init__(self, seq: int, filter_: PollFilter, agent_id: str) -> None:
        self.seq = seq
        self.filter = filter_
        self.agent_id = agent_id
        self.event = asyncio.Event()
        # The ticket key of a wake not yet acted on.
        self.woken_by: ReadyKey | None = None
        # When the ticket of that wake became ready (time.monotonic(): its
        # commit here, or its NOTIFY's arrival from another process).
        self.ready_at = 0.0
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

    def percentile(self, q: float) -> float | None:
        """The q-quantile of the recent ready -> claimed latencies, seconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# More keys than this in `surplus` (tickets of many tenants nobody polls
# for): forget them and let every newcomer look for a while.
MAX_SURPLUS_KEYS = 10_000
LOOK_AFTER_LOSS_SECONDS = 5.0
# How many more pollers look when a look of its own found a ticket.
BACKLOG_FAN_OUT = 2
# An agent needs one waiting ClaimTicket; a few cover a retry overlapping a
# call its side already gave up on.
MAX_PARKED_PER_AGENT = 4


class ParkedPollers:
    def __init__(self, recheck_seconds: float = 5.0) -> None:
        self.recheck = recheck_seconds
        self._looked_at: dict[PollFilter, float] = {}
        self._queues: dict[PollFilter, dict[int, Poller]] = {}
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Tickets that became ready while no idle poller could take them.
        self._surplus: Counter[ReadyKey] = Counter()
        self._everyone_looks_until = 0.0
        self._per_agent: Counter[tuple[str, str]] = Counter()
        self.stats = MatchStats()

    def must_look(self, filter_: PollFilter) -> bool:
        """Whether a poller about to park should look at the database first."""
        return filter_ not in self._queues or self.due(filter_)

    def due(self, filter_: PollFilter) -> bool:
        """Whether a parked poller of `filter_` should look without a wake."""
        now = asyncio.get_running_loop().time()
        if now < self._everyone_looks_until or now - self._looked_at.get(filter_, 0.0) >= self.recheck:
            return True
        return any(admits(filter_, key) for key in self._surplus)

    def has_looked(self, filter_: PollFilter) -> bool:
        """Whether a poller of `filter_` has looked at the database yet."""
        return filter_ in self._looked_at

    def looked(self, filter_: PollFilter, claimed: ReadyKey | None, *, woken: bool) -> None:
        """A look at the database found `claimed` (None: nothing). A look of
        its own that found a ticket found a backlog (tickets that were ready
        before these pollers parked, or whose wakes went elsewhere): the two
        oldest idle pollers of its filter look too, and so on while looks
        find tickets, so a backlog drains at the pace of claims."""
        self._looked_at[filter_] = asyncio.get_running_loop().time()
        if claimed is not None and not woken:
            self._nudge(filter_, BACKLOG_FAN_OUT)
        if claimed is not None:
            if self._surplus.get(claimed, 0) > 0:
                self._surplus[claimed] -= 1
                if not self._surplus[claimed]:
                    del self._surplus[claimed]
            return
        for key in [k for k in self._surplus if admits(filter_, k)]:
            del self._surplus[key]

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve on `loop` (before the server takes calls: a wake that comes
        before any poller parked still counts as surplus)."""
        self._loop = loop
        loop.call_soon_threadsafe(loop.call_later, self.recheck, self._sweep)

    def park(self, filter_: PollFilter, agent_id: str) -> Poller:
        """Park a poller of `agent_id`; RESOURCE_EXHAUSTED past the agent's
        share (a hostile guest opening calls by the thousand to fill memory)."""
        agent = (filter_.tenant_id, agent_id)
        if self._per_agent[agent] >= MAX_PARKED_PER_AGENT:
            raise QuotaExceeded(
                "parked_claims",
                self._per_agent[agent],
                MAX_PARKED_PER_AGENT,
                None,
                f"agent {agent_id} already has {self._per_agent[agent]} ClaimTicket calls waiting "
                f"(at most {MAX_PARKED_PER_AGENT}): wait for one to answer",
            )
        self._per_agent[agent] += 1
        PARKED_POLLERS.inc()
        poller = Poller(next(self._seq), filter_, agent_id)
        self._queues.setdefault(filter_, {})[poller.seq] = poller
        return poller

    def leave(self, poller: Poller) -> None:
        agent = (poller.filter.tenant_id, poller.agent_id)
        self._per_agent[agent] -= 1
        PARKED_POLLERS.dec()
        if not self._per_agent[agent]:
            del self._per_agent[agent]
        queue = self._queues.get(poller.filter)
        if queue is not None:
            queue.pop(poller.seq, None)
            if not queue:
                del self._queues[poller.filter]
                self._looked_at.pop(poller.filter, None)
        if poller.woken_by is not None:  # woken, but gone before acting on it
            self._wake_one(poller.woken_by, poller.ready_at)

    def wake(self, ready: Mapping[ReadyKey, int], at: float | None = None) -> None:
        """Wake a poller for each ticket that became ready (at `at`, monotonic)."""
        at = time.monotonic() if at is None else at
        for key, count in ready.items():
            for woken in range(count):
                if not self._wake_one(key, at):
                    self._surplus[key] += count - woken
                    break
        if len(self._surplus) > MAX_SURPLUS_KEYS:
            self._surplus.clear()
            self._wake_all()

    def wake_threadsafe(self, ready: Mapping[ReadyKey, int]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake, dict(ready), time.monotonic())

    def wake_all_threadsafe(self) -> None:
        """Every parked poller looks again (wakes may have been missed)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_all)

    def _sweep(self) -> None:
        """The backstop: in every filter no poller of which looked for
        `recheck` seconds, the oldest idle poller looks (one timer for all
        parked pollers, not one each)."""
        assert self._loop is not None
        for filter_ in list(self._queues):
            if self.due(filter_):
                self._nudge(filter_, 1)
        self._loop.call_later(self.recheck, self._sweep)

    def _nudge(self, filter_: PollFilter, count: int) -> None:
        """The `count` oldest idle pollers of `filter_` look (no ticket named)."""
        for poller in self._queues.get(filter_, {}).values():
            if count <= 0:
                return
            if not poller.event.is_set():
                poller.event.set()
                count -= 1

    def _wake_all(self) -> None:
        self._everyone_looks_until = asyncio.get_running_loop().time() + LOOK_AFTER_LOSS_SECONDS
        for poller in self._all():
            poller.event.set()

    def _all(self) -> Iterator[Poller]:
        for queue in list(self._queues.values()):
            yield from list(queue.values())

    def _wake_one(self, key: ReadyKey, at: float) -> bool:
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
        oldest.ready_at = at
        oldest.event.set()
        self.stats.wakes += 1
        return True
