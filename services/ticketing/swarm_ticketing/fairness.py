"""Claims served by deficit round-robin over tenants.

Every tenant's agents share ticketing's claim capacity: a few claims run at
once (`slots`, each holding a database connection), the rest wait. A tenant
whose agents ask a thousand claims at once (a flood of tickets over fifty
projects, a fleet reconnecting) must not make another tenant's one claim
wait behind all of them, which first-come-first-served does, and a cap per
tenant or per project does not prevent (the flood splits across keys).

So claims wait per tenant, and a free slot takes the next claim from the
tenants in turn: each tenant with claims waiting gets up to its weight's
worth per round (deficit round-robin, Shreedhar & Varghese 1995, every
claim costing one). Within a tenant: first come, first served. A tenant's
weight comes from SWARM_TICKETING_TENANT_WEIGHTS (default 1): an operator
gives a paying plan's tenants more.

Runs on the server's event loop; the claims themselves run in its thread pool.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


class _Waiting:
    __slots__ = ("call", "future")

    def __init__(self, call: Callable[[], Any], future: asyncio.Future[Any]) -> None:
        self.call = call
        self.future = future


class FairClaims:
    def __init__(self, executor: Executor, slots: int, weights: Mapping[str, int] | None = None) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self._executor = executor
        self._slots = slots
        self._weights = dict(weights or {})
        self._waiting: dict[str, deque[_Waiting]] = {}
        # Tenants with claims waiting, in the order they are served.
        self._turns: deque[str] = deque()
        self._deficit: dict[str, int] = {}
        self._running = 0

    def weight(self, tenant_id: str) -> int:
        return self._weights.get(tenant_id, 1)

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    async def run(self, tenant_id: str, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the thread pool, when the tenants' turns say so."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        queue = self._waiting.get(tenant_id)
        if queue is None:
            queue = self._waiting[tenant_id] = deque()
            self._turns.append(tenant_id)
            self._deficit[tenant_id] = 0
        queue.append(_Waiting(lambda: fn(*args), future))
        self._dispatch()
        return await future  # cancelled while waiting: _dispatch skips it

    def _dispatch(self) -> None:
        while self._running < self._slots and self._turns:
            tenant = self._turns[0]
            queue = self._waiting[tenant]
            while queue and queue[0].future.done():  # its caller went away while it waited
                queue.popleft()
            if not queue:
                self._retire(tenant)
                continue
            if self._deficit[tenant] <= 0:
                self._deficit[tenant] += self.weight(tenant)
            item = queue.popleft()
            self._deficit[tenant] -= 1
            if not queue:
                self._retire(tenant)
            elif self._deficit[tenant] <= 0:
                self._turns.rotate(-1)  # its share of this round is spent
            self._start(item)

    def _retire(self, tenant: str) -> None:
        """Nothing of `tenant` waits: it leaves the round (and its deficit)."""
        self._turns.remove(tenant)
        del self._waiting[tenant]
        del self._deficit[tenant]

    def _start(self, item: _Waiting) -> None:
        self._running += 1
        loop = asyncio.get_running_loop()
        running = loop.run_in_executor(self._executor, item.call)

        def finished(done: asyncio.Future[Any]) -> None:
            self._running -= 1
            if not item.future.done():
                if done.exception() is not None:
                    item.future.set_exception(done.exception())  # type: ignore[arg-type]
                else:
                    item.future.set_result(done.result())
            self._dispatch()

        running.add_done_callback(finished)


def parse_weights(text: str) -> dict[str, int]:
    """ "acme=4,globex=2" -> {"acme": 4, "globex": 2}; ValueError naming a bad entry."""
    weights: dict[str, int] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        tenant, sep, value = entry.partition("=")
        if not sep or not tenant.strip() or not value.strip().isdigit() or not 1 <= int(value) <= 1000:
            raise ValueError(f"tenant weight {entry!r}: expected tenant=weight with a weight from 1 to 1000")
        weights[tenant.strip()] = int(value)
    return weights
