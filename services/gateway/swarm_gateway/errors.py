"""One place where errors become HTTP responses: every SwarmError (a
backend's, passed through by the clients, or one the gateway raises) in one
handler; request validation (422) and routing errors (404/405) in theirs.

Every error body has the same shape:
    {"error": {"status": "NOT_FOUND", "message": "...", "reason": "...",
               "field": "tickets[0].name", "metadata": {...}}}
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from typing import Any

import grpc
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from swarmcommon.errors import QuotaExceeded, SwarmError

log = logging.getLogger(__name__)

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
# What gRPC itself says when a message exceeds a channel's limit, on either
# side ("Sent message larger than max", "Received message larger than max").
_GRPC_SIZE_ERROR = "message larger than max"
# Refusals without a window (e.g. no live-stream place free): poll.
DEFAULT_RETRY_AFTER_SECONDS = 60


class ErrorDetail(BaseModel):
    status: str
    message: str
    reason: str | None = None
    field: str | None = None
    metadata: dict[str, str] = {}


class ErrorBody(BaseModel):
    error: ErrorDetail


# Declared on every router so the OpenAPI document lists what clients can get.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": desc}
    for code, desc in {
        400: "Invalid argument (the message names the field)",
        401: "Missing, unknown or revoked credentials",
        403: "The admin surface is disabled",
        404: "Not found (or owned by another tenant)",
        409: "Conflict with the object's current state",
        413: "The request is too large (the message says the limit); split it",
        429: "Quota or rate limit reached; see Retry-After",
        503: "A backend is unavailable; retry",
    }.items()
}


class PayloadTooLarge(SwarmError):
    """A request the gateway will not read or cannot pass on: retrying cannot help."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = PAYLOAD_TOO_LARGE

    def __init__(self, message: str, limit: int | None = None) -> None:
        super().__init__(message, field="body", limit=limit)


def _too_large(exc: SwarmError) -> PayloadTooLarge | None:
    """`exc` as a PayloadTooLarge when that is what it means, else None."""
    if isinstance(exc, PayloadTooLarge):
        return exc
    if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED and _GRPC_SIZE_ERROR in exc.message.lower():
        return PayloadTooLarge(
            "the request or its answer is too large to pass to the backend: "
            "send fewer or shorter items, or ask for a smaller page_size"
        )
    return None


def rate_limit_headers(limit: int, remaining: int, reset: datetime | None) -> dict[str, str]:
    headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(max(remaining, 0))}
    if reset is not None:
        headers["X-RateLimit-Reset"] = str(int(reset.timestamp()))
    return headers


def _retry_headers(exc: SwarmError) -> dict[str, str]:
    if not isinstance(exc, QuotaExceeded):
        return {"Retry-After": str(DEFAULT_RETRY_AFTER_SECONDS)}
    if exc.retry_after is not None:
        seconds = exc.retry_after.total_seconds()
    elif exc.resets_at is not None:
        seconds = (exc.resets_at - datetime.now(UTC)).total_seconds()
    else:
        seconds = DEFAULT_RETRY_AFTER_SECONDS
    headers = {"Retry-After": str(max(1, math.ceil(seconds)))}
    if exc.resource == "api_calls_per_hour":
        headers.update(rate_limit_headers(exc.limit, 0, exc.resets_at))
    return headers


def _headers(exc: SwarmError, http: int) -> dict[str, str]:
    if http == 429:
        return _retry_headers(exc)
    if http == 401:
        return {"WWW-Authenticate": "Bearer"}
    return {}


def error_response(exc: SwarmError) -> JSONResponse:
    """The HTTP answer for any SwarmError: the backend's, or one the gateway raised."""
    too_large = _too_large(exc)
    if too_large is not None:
        exc, http = too_large, 413
    else:
        http = HTTP_STATUS.get(exc.code, 500)
    exposed = http < 500 or exc.code == grpc.StatusCode.UNAVAILABLE
    if http >= 500:
        # The client gets no details; the operator needs them.
        log.warning("backend error %s: %s", exc.code.name, exc.message, extra={"reason": exc.reason})
    # Backend internals never reach the client.
    detail = ErrorDetail(
        status=exc.code.name,
        message=(exc.message or exc.code.name) if exposed else "internal error",
        reason=exc.reason if exposed else None,
        field=exc.metadata.get("field") if exposed else None,
        metadata=dict(exc.metadata) if exposed else {},
    )
    return JSONResponse(ErrorBody(error=detail).model_dump(), status_code=http, headers=_headers(exc, http))


def swarm_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SwarmError)
    return error_response(exc)


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: safe even for input echoed back verbatim
    (a lone surrogate in a request cannot be encoded as UTF-8)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def validation_error_response(request: Request, exc: Exception) -> JSONResponse:
    """422 in FastAPI's documented shape, {"detail": [{loc, msg, type, ...}]}."""
    assert isinstance(exc, RequestValidationError)
    return AsciiJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)


def http_error_response(request: Request, exc: Exception) -> JSONResponse:
    """Routing errors (404 no such route, 405 wrong method) in our error shape.

    For 405, `Allow` lists every method of the path: Starlette would list only
    those of the first route whose path matched.
    """
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        methods: set[str] = set()
        for route in request.app.routes:
            if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
                methods |= route.methods or set()
        headers["Allow"] = ", ".join(sorted(methods))
    status = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
    body = ErrorBody(error=ErrorDetail(status=status, message=str(exc.detail)))
    return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=headers)
