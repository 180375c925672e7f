"""One proxied Messages call, run as its own task so that nothing the guest
does (hanging up mid-stream, dying right after the answer) stops it from
being settled: estimate -> hold in quota -> forward -> read usage -> settle.

The HTTP handler only watches it: it waits for `opened` (the upstream's
status and headers, or a refusal) and then relays `chunks`. A stream's
`message_stop` event is held back until the first settlement attempt is
done, so a guest that has the whole answer also has its usage recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from swarm_telemetry.prices import ModelPrice
from swarm_telemetry.proxy.budget import CostHolds
from swarm_telemetry.proxy.errors import (
    ProxyError,
    from_swarm,
    from_ticketing,
    over_budget,
    ticket_over_budget,
)
from swarm_telemetry.proxy.estimate import estimate
from swarm_telemetry.proxy.history import OutputHistory
from swarm_telemetry.proxy.settle import Call, Settler
from swarm_telemetry.proxy.tickets import TicketBudget, TicketGate
from swarm_telemetry.proxy.usage import STOP_EVENT, EventSplitter, UsageReader
from swarmcommon.clock import Clock
from swarmcommon.errors import QuotaExceeded, SwarmError

log = logging.getLogger(__name__)
T = TypeVar("T")
# Upstream answer headers a guest may see (the SDKs read them for retries).
PASSED_HEADERS = ("content-type", "request-id", "retry-after", "x-should-retry")
RETRY_FIRST, RETRY_MAX = 0.5, 30.0


@dataclass(frozen=True)
class Upstream:
    base_url: str
    api_key: str
    http: httpx.AsyncClient


@dataclass(frozen=True)
class Services:
    """What every exchange uses; `holds` None: no budgets (no quota configured)."""

    upstream: Upstream
    history: OutputHistory
    holds: CostHolds | None
    settler: Settler
    clock: Clock
    run: Callable[..., Any]  # runs a blocking function on the proxy's thread pool
    # How long a failed settlement is retried before the call is logged as unsettled.
    settle_retry_seconds: float
    # Per-ticket cost caps; None: no ticketing configured (the ticket header only attributes).
    tickets: TicketGate | None = None


class Exchange:
    def __init__(
        self,
        services: Services,
        call: Call,
        price: ModelPrice,
        body: dict[str, Any],
        raw: bytes,
        headers: dict[str, str],
        path: str,
    ) -> None:
        self.s = services
        self.call = call
        self.price = price
        self.body = body
        self.raw = raw
        self.headers = headers
        self.path = path
        self.opened = asyncio.Event()
        self.refusal: ProxyError | None = None
        self.status = 502
        self.answer_headers: dict[str, str] = {}
        self.answer = b""
        self.streaming = False
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.abandoned = False  # the guest hung up; the call still runs to its end
        self.usage = UsageReader()
        self.reservation_id: str | None = None
        self._ticket_admitted = 0  # this call's estimate, admitted against its ticket's cap
        self._tail = b""  # the held-back message_stop event

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        result: T = await self.s.run(fn, *args)
        return result

    # -- the call --------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._ticket_admitted and self.s.tickets is not None:
                self.s.tickets.settled(self.call.tenant_id, self.call.ticket_id, self._ticket_admitted)

    async def _run(self) -> None:
        try:
            await self._hold()
        except ProxyError as refused:
            self.refusal = refused
            self.opened.set()
            return
        except Exception:
            log.exception("llm call could not be admitted", extra={"request_id": self.call.id})
            self.refusal = ProxyError(500, "the proxy failed to admit this call; retry")
            self.opened.set()
            return
        try:
            await self._forward()
        except Exception as exc:  # the upstream failed or went away; settle what it reported
            log.warning("llm upstream call failed", extra={"request_id": self.call.id, "error": repr(exc)})
            if not self.opened.is_set():
                self.refusal = ProxyError(
                    502, f"the model provider could not be reached: {type(exc).__name__}"
                )
            else:
                self._emit(_stream_error(f"the model provider's stream broke off: {type(exc).__name__}"))
        settled = await self._settle_once()
        self.opened.set()
        self._emit_tail()
        if not settled:
            await self._settle_retrying()

    async def _hold(self) -> None:
        max_tokens = int(self.body["max_tokens"])
        recent = await self._blocking(
            self.s.history.recent_output_tokens, self.call.tenant_id, self.call.model
        )
        guess = estimate(self.price, self.body, max_tokens, recent)
        if self.call.ticket_id and self.s.tickets is not None:
            await self._admit_to_ticket(self.s.tickets, guess.cost_usd_micros)
        if self.s.holds is None:
            return
        try:
            self.reservation_id = await self._blocking(
                self.s.holds.reserve, self.call.tenant_id, guess.cost_usd_micros, self.call.id
            )
        except QuotaExceeded as refused:
            raise over_budget(
                self.call.tenant_id, refused, guess.cost_usd_micros, self.s.clock.now()
            ) from None
        except SwarmError as err:
            raise from_swarm(err, "the tenant's budget could not be checked") from None

    async def _admit_to_ticket(self, gate: TicketGate, guess: int) -> None:
        """The ticket's lease and cost cap (see tickets.py); refused: ProxyError."""
        call = self.call
        try:
            budget: TicketBudget = await self._blocking(
                gate.budget, call.tenant_id, call.ticket_id, call.agent_id
            )
        except SwarmError as err:
            raise from_ticketing(err, call.ticket_id) from None
        if call.project_id and call.project_id != budget.project_id:
            raise ProxyError(
                400,
                f"x-swarm-project-id: ticket {call.ticket_id} belongs to project {budget.project_id}, "
                f"not {call.project_id}",
            )
        self.call = dataclasses.replace(call, project_id=budget.project_id)
        if budget.cap is None:
            return
        recorded = await self._blocking(gate.recorded, call.tenant_id, call.ticket_id)
        spent = gate.admit(call.tenant_id, call.ticket_id, recorded, guess, budget.cap)
        if spent is None:
            self._ticket_admitted = guess
            return
        try:
            await self._blocking(
                gate.release, call.tenant_id, call.ticket_id, call.agent_id, spent, budget.cap, call.id
            )
            held = (
                "The ticket was released for review (budget exceeded); an operator can raise its cap "
                "and redrive it."
            )
        except SwarmError as err:
            log.warning(
                "ticket over its cost cap not released for review",
                extra={"request_id": call.id, "ticket_id": call.ticket_id, "error": err.message},
            )
            held = f"The ticket could not be released for review: {err.message}"
        raise ticket_over_budget(call.ticket_id, spent, budget.cap, budget.source, guess, held)

    async def _forward(self) -> None:
        up = self.s.upstream
        request = up.http.build_request(
            "POST", up.base_url.rstrip("/") + self.path, content=self.raw, headers=self.headers
        )
        response = await up.http.send(request, stream=True)
        try:
            self.status = response.status_code
            self.answer_headers = {h: response.headers[h] for h in PASSED_HEADERS if h in response.headers}
            kind = response.headers.get("content-type", "")
            if response.status_code == 200 and kind.startswith("text/event-stream"):
                self.streaming = True
                self.opened.set()
                await self._relay(response)
            else:
                self.answer = await response.aread()
                if response.status_code == 200:
                    self.usage.message(self.answer)
        finally:
            await response.aclose()

    async def _relay(self, response: httpx.Response) -> None:
        splitter = EventSplitter()
        async for chunk in response.aiter_bytes():
            for event in splitter.feed(chunk):
                if event.data is not None:
                    self.usage.event(event.data)
                if event.name == STOP_EVENT:
                    self._tail = event.raw
                else:
                    self._emit(event.raw)
        self._emit(splitter.rest())

    def _emit(self, data: bytes) -> None:
        if data and not self.abandoned:
            self.chunks.put_nowait(data)

    def _emit_tail(self) -> None:
        self._emit(self._tail)
        self.chunks.put_nowait(None)

    # -- settlement ------------------------------------------------------------------

    async def _settle_once(self) -> bool:
        try:
            await self._blocking(self.s.settler.settle, self.call, self.reservation_id, self.usage.tokens)
        except Exception as exc:
            log.warning(
                "llm call not settled yet; retrying",
                extra={"request_id": self.call.id, "tenant_id": self.call.tenant_id, "error": repr(exc)},
            )
            return False
        return True

    async def _settle_retrying(self) -> None:
        delay, waited = RETRY_FIRST, 0.0
        try:
            while waited < self.s.settle_retry_seconds:
                await asyncio.sleep(delay)
                waited += delay
                if await self._settle_once():
                    return
                delay = min(delay * 2, RETRY_MAX)
        except asyncio.CancelledError:  # the proxy stopped first
            self._unsettled()
            raise
        self._unsettled()

    def _unsettled(self) -> None:
        log.error(
            "llm call could not be settled; its usage must be reconciled by hand",
            extra={
                "request_id": self.call.id,
                "tenant_id": self.call.tenant_id,
                "model": self.call.model,
                "reservation_id": self.reservation_id,
                "tokens": repr(self.usage.tokens),
            },
        )


def _stream_error(message: str) -> bytes:
    """An `error` event, as the provider sends one mid-stream."""
    data = json.dumps({"type": "error", "error": {"type": "api_error", "message": message}})
    return f"event: error\ndata: {data}\n\n".encode()
