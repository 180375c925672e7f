"""The proxy's HTTP face: POST /v1/messages (streamed or not) and
/v1/messages/count_tokens, authenticated by the agent token given as the
API key (`x-api-key`, or `Authorization: Bearer`), answering in the
Anthropic API's shapes.

Guests may attribute a call to a project and ticket of their tenant with
the `x-swarm-project-id` / `x-swarm-ticket-id` headers (for cost
summaries); tenant, agent and role always come from the token. With
ticketing configured, a call tagged with a ticket is charged to it only if
the token's agent holds the ticket's lease, and is held to the ticket's
cost cap (`tickets.py`); the project is then the ticket's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from swarm_telemetry.prices import ModelPrice, price_of
from swarm_telemetry.proxy.errors import ProxyError
from swarm_telemetry.proxy.exchange import Exchange, Services
from swarm_telemetry.proxy.settle import PROVIDER, Call
from swarmcommon import validation as v
from swarmcommon.agenttoken import AgentClaims, TokenVerifier
from swarmcommon.errors import InvalidArgument, Unauthenticated

log = logging.getLogger(__name__)
# Anthropic's own limit for a Messages request.
MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_VERSION = "2023-06-01"
MESSAGES, COUNT_TOKENS = "/v1/messages", "/v1/messages/count_tokens"


class LlmProxy:
    def __init__(
        self,
        verifier: TokenVerifier,
        services: Services,
        on_stop: Callable[[], Awaitable[None]],
        drain_seconds: float = 10.0,
    ) -> None:
        self.verifier = verifier
        self.drain_seconds = drain_seconds
        self.s = services
        self.on_stop = on_stop
        self.calls: set[asyncio.Task[None]] = set()
        self.ready = threading.Event()  # set once serving
        self.app = Starlette(
            routes=[
                Route(MESSAGES, self.messages, methods=["POST"]),
                Route(COUNT_TOKENS, self.count_tokens, methods=["POST"]),
            ],
            exception_handlers={HTTPException: self._http_error},
            lifespan=self._lifespan,
        )

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.ready.set()
        yield
        # Calls still running finish and settle before the upstream client closes
        # (those that outlast the grace period are logged as unsettled).
        if self.calls:
            await asyncio.wait(self.calls, timeout=self.drain_seconds)
        await self.on_stop()

    # -- routes ------------------------------------------------------------------------

    async def messages(self, request: Request) -> Response:
        call_id = f"llm-{uuid.uuid4().hex}"
        try:
            claims = await self._authenticate(request)
            raw, body = await _json_body(request)
            model, price, stream = _call_fields(body)
            call = Call(
                id=call_id,
                tenant_id=claims.tenant_id,
                agent_id=claims.agent_id,
                role=claims.role,
                project_id=_attribution(request, "x-swarm-project-id"),
                ticket_id=_attribution(request, "x-swarm-ticket-id"),
                model=model,
                started_at=self.s.clock.now(),
            )
        except ProxyError as err:
            return err.response(call_id)
        headers = self._upstream_headers(request, stream)
        exchange = Exchange(self.s, call, price, body, raw, headers, MESSAGES + _query(request))
        task = asyncio.get_running_loop().create_task(exchange.run(), name=call_id)
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)
        await exchange.opened.wait()
        if exchange.refusal is not None:
            return exchange.refusal.response(call_id)
        answer_headers = {**exchange.answer_headers, "x-swarm-request-id": call_id}
        if not exchange.streaming:
            return Response(exchange.answer, status_code=exchange.status, headers=answer_headers)
        answer_headers["cache-control"] = "no-cache"
        return StreamingResponse(_relay(exchange), status_code=exchange.status, headers=answer_headers)

    async def count_tokens(self, request: Request) -> Response:
        """Free at the provider: forwarded with the platform key, no budget."""
        try:
            await self._authenticate(request)
            raw, _ = await _json_body(request)
        except ProxyError as err:
            return err.response()
        up = self.s.upstream
        try:
            answer = await up.http.post(
                up.base_url.rstrip("/") + COUNT_TOKENS + _query(request),
                content=raw,
                headers=self._upstream_headers(request, stream=False),
            )
        except Exception as exc:
            return ProxyError(
                502, f"the model provider could not be reached: {type(exc).__name__}"
            ).response()
        kind = answer.headers.get("content-type", "application/json")
        return Response(answer.content, status_code=answer.status_code, headers={"content-type": kind})

    # -- helpers -----------------------------------------------------------------------

    async def _authenticate(self, request: Request) -> AgentClaims:
        token = request.headers.get("x-api-key", "")
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if not token and scheme.lower() == "bearer":
            token = bearer.strip()
        if not token:
            raise ProxyError(
                401, "no agent token: pass it as the API key (x-api-key) or as Authorization: Bearer <token>"
            )
        try:
            # Off the event loop: a revocation check may ask another service.
            claims: AgentClaims = await self.s.run(self.verifier.verify, token)
        except Unauthenticated as err:
            raise ProxyError(401, err.message) from None
        return claims

    def _upstream_headers(self, request: Request, stream: bool) -> dict[str, str]:
        """The provider sees the platform key, never the guest's token."""
        headers = {
            "x-api-key": self.s.upstream.api_key,
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            "anthropic-version": request.headers.get("anthropic-version", DEFAULT_VERSION),
        }
        if beta := request.headers.get("anthropic-beta"):
            headers["anthropic-beta"] = beta
        return headers

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        what = "no such route" if status == 404 else "method not allowed" if status == 405 else "bad request"
        return ProxyError(status, f"{what}: {request.method} {request.url.path}").response()


async def _relay(exchange: Exchange) -> AsyncIterator[bytes]:
    try:
        while (chunk := await exchange.chunks.get()) is not None:
            yield chunk
    finally:
        # Done, or the guest hung up: either way nothing more is queued for it.
        exchange.abandoned = True


def _query(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


async def _json_body(request: Request) -> tuple[bytes, dict[str, Any]]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ProxyError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    raw = b""
    async for part in request.stream():
        raw += part
        if len(raw) > MAX_BODY_BYTES:
            raise ProxyError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        raise ProxyError(400, "request body is not JSON") from None
    if not isinstance(body, dict):
        raise ProxyError(400, "request body must be a JSON object")
    return raw, body


def _call_fields(body: dict[str, Any]) -> tuple[str, ModelPrice, bool]:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > 128:
        raise ProxyError(400, "model: is required (a model name of at most 128 characters)")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ProxyError(400, "max_tokens: is required and must be a positive integer")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProxyError(400, "messages: is required and must be a non-empty list")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ProxyError(400, "stream: must be true or false")
    price = price_of(PROVIDER, model)
    if price is None:
        # An unpriced call could not be held against the budget: refused, never guessed.
        raise ProxyError(
            400,
            f"model: {model!r} has no published price in the platform's price table, "
            "so its cost cannot be held against the budget",
        )
    return model, price, stream


def _attribution(request: Request, header: str) -> str:
    value = request.headers.get(header, "")
    if not value:
        return ""
    try:
        return v.bounded_text(header, v.name_id(header, value), 64)
    except InvalidArgument as err:
        raise ProxyError(400, err.message) from None
