"""One place where backend gRPC statuses become HTTP responses.

Every error body has the same shape:
    {"error": {"status": "NOT_FOUND", "message": "...", "reason": "...",
               "field": "tickets[0].name", "metadata": {...}}}
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import grpc
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

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
        404: "Not found (or owned by another tenant)",
        409: "Conflict with the object's current state",
        429: "Quota or rate limit reached; see Retry-After",
        503: "A backend is unavailable; retry",
    }.items()
}


class ApiError(Exception):
    """An error the gateway itself raises (auth, admin surface)."""

    def __init__(
        self, status_code: int, status: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.status = status
        self.message = message
        self.headers = headers or {}


def _details(exc: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo | None, float | None]:
    """The ErrorInfo and, for quota refusals, the RetryInfo delay in seconds."""
    info, retry_after = None, None
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        candidate, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(candidate):
            info = candidate
        elif detail.Unpack(retry):
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
    return info, retry_after


def rate_limit_headers(limit: int, remaining: int, reset: datetime | None) -> dict[str, str]:
    headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(max(remaining, 0))}
    if reset is not None:
        headers["X-RateLimit-Reset"] = str(int(reset.timestamp()))
    return headers


def _quota_headers(metadata: dict[str, str], retry_after: float | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    resets_at = metadata.get("resets_at")
    reset = datetime.fromisoformat(resets_at.replace("Z", "+00:00")) if resets_at else None
    if retry_after is None and reset is not None:
        retry_after = (reset - datetime.now(UTC)).total_seconds()
    # Without a window (VMs) capacity frees when something finishes: poll.
    headers["Retry-After"] = str(max(1, math.ceil(retry_after))) if retry_after is not None else "60"
    if metadata.get("resource") == "api_calls_per_hour" and "limit" in metadata:
        headers.update(rate_limit_headers(int(metadata["limit"]), 0, reset))
    return headers


def grpc_error_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, grpc.RpcError)
    code = exc.code()
    info, retry_after = _details(exc)
    metadata = dict(info.metadata) if info else {}
    http = HTTP_STATUS.get(code, 500)
    # Backend internals never reach the client.
    message = exc.details() if http < 500 or code == grpc.StatusCode.UNAVAILABLE else "internal error"
    detail = ErrorDetail(
        status=code.name,
        message=message or code.name,
        reason=info.reason if info else None,
        field=metadata.get("field"),
        metadata=metadata,
    )
    headers = _quota_headers(metadata, retry_after) if code == grpc.StatusCode.RESOURCE_EXHAUSTED else {}
    return JSONResponse(ErrorBody(error=detail).model_dump(), status_code=http, headers=headers)


def api_error_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    body = ErrorBody(error=ErrorDetail(status=exc.status, message=exc.message))
    return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=exc.headers)


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
