"""The gate every request passes before FastAPI reads its body.

FastAPI reads and parses a route's body before it runs the route's
dependencies, so authentication as a dependency came after buffering
whatever a caller sent, key or not. This ASGI middleware runs first:

1. /api/* needs an API key and /admin/* the operator token: a request
   without valid credentials is refused before a byte of its body is read;
2. then a Content-Length over `max_body_bytes` is 413 at once;
3. the body is read here, counted as it arrives (a chunked body declares
   no length, and a Content-Length beside chunked framing means nothing),
   and refused with 413 the moment it passes the cap;
4. the route then gets the body from memory, the caller in
   `request.state` (see deps.py), and its response the rate-limit headers.
"""

from __future__ import annotations

import anyio
from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swarm_gateway.auth import authenticate, bearer_token, check_admin
from swarm_gateway.config import Settings
from swarm_gateway.errors import PayloadTooLarge, error_response
from swarmcommon.errors import InvalidArgument, SwarmError

# Where the guard keeps what it learned, in the request's ASGI scope state.
CALLER = "caller"
ADMIN = "admin"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is too large: the limit is {limit} bytes "
        "(SWARM_GATEWAY_MAX_BODY_BYTES); split it, e.g. fewer tickets per project",
        limit=limit,
    )


def _check_declared_length(headers: Headers, limit: int) -> None:
    declared = headers.get("content-length")
    if declared is None or "chunked" in headers.get("transfer-encoding", "").lower():
        return
    try:
        length = int(declared)
    except ValueError:
        raise InvalidArgument("Content-Length", "must be a number of bytes") from None
    if length > limit:
        raise _too_large(limit)


async def _read_body(receive: Receive, limit: int) -> Message:
    """The whole body as one message, or the disconnect that cut it short."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return message
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}


def _replay(first: Message, receive: Receive) -> Receive:
    """`receive` for the app: the body read here, then the connection's own
    messages (a streaming response listens there for the client leaving)."""
    pending = [first]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


def _with_headers(send: Send, extra: dict[str, str]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start" and extra:
            headers = MutableHeaders(scope=message)
            for name, value in extra.items():
                if name not in headers:
                    headers[name] = value
        await send(message)

    return sending


class RequestGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            extra = await self._admit(scope)
            settings: Settings = scope["app"].state.settings
            body = await _read_body(receive, settings.max_body_bytes)
        except SwarmError as exc:
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), _with_headers(send, extra))

    async def _admit(self, scope: Scope) -> dict[str, str]:
        """Check credentials and the declared size; the headers the answer gets."""
        app: FastAPI = scope["app"]
        settings: Settings = app.state.settings
        headers = Headers(scope=scope)
        state = scope.setdefault("state", {})
        path: str = scope["path"]
        extra: dict[str, str] = {}
        if _under(path, "/admin"):
            check_admin(settings.admin_token, headers)
            state[ADMIN] = True
        elif _under(path, "/api"):
            secret = bearer_token(headers)
            state[CALLER], extra = await anyio.to_thread.run_sync(
                authenticate, app.state.backends, app.state.key_cache, secret
            )
        # Only a caller with credentials learns the size limit.
        _check_declared_length(headers, settings.max_body_bytes)
        return extra
