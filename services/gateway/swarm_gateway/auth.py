"""Who is calling: API keys for tenants, a separate token for operators.

Every tenant request is authenticated through the quota service (cached for
a few seconds) and charged one `api_calls_per_hour`; the response carries
X-RateLimit-Limit/Remaining/Reset, and an exhausted budget is 429 with
Retry-After (from the quota error, in errors.py).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Annotated

import grpc
from fastapi import Depends, Request, Response

from swarm.quota.v1 import quota_pb2 as qpb
from swarm_gateway.backends import Backends
from swarm_gateway.errors import ApiError, rate_limit_headers

MAX_CACHED_KEYS = 10_000


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    api_key_id: str


class KeyCache:
    """Authenticated keys for a short while, by a hash of the secret."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[Caller, float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _digest(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    def get(self, secret: str) -> Caller | None:
        with self._lock:
            hit = self._entries.get(self._digest(secret))
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, secret: str, caller: Caller) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= MAX_CACHED_KEYS:
                self._entries.clear()  # crude but bounded; entries are cheap to refill
            self._entries[self._digest(secret)] = (caller, time.monotonic() + self.ttl)

    def forget_key(self, api_key_id: str) -> None:
        with self._lock:
            for digest in [d for d, (c, _) in self._entries.items() if c.api_key_id == api_key_id]:
                del self._entries[digest]


def backends(request: Request) -> Backends:
    b: Backends = request.app.state.backends
    return b


Backend = Annotated[Backends, Depends(backends)]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "UNAUTHENTICATED",
            "missing credentials: send 'Authorization: Bearer <api key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


def authenticate(request: Request, response: Response, b: Backend) -> Caller:
    secret = _bearer(request)
    cache: KeyCache = request.app.state.key_cache
    caller = cache.get(secret)
    if caller is None:
        try:
            reply = b.quota.Authenticate(qpb.AuthenticateRequest(secret=secret), timeout=b.timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise ApiError(
                    401, "UNAUTHENTICATED", "invalid or revoked API key", {"WWW-Authenticate": "Bearer"}
                ) from None
            raise
        caller = Caller(reply.tenant.id, reply.api_key_id)
        cache.put(secret, caller)
    # No request_id: a rate-limit tick needs no deduplication, and an id per
    # call would make quota keep a row per API call.
    usage = b.quota.Consume(
        qpb.ConsumeRequest(tenant_id=caller.tenant_id, resource=qpb.RESOURCE_API_CALLS_PER_HOUR, amount=1),
        timeout=b.timeout,
    ).usage
    reset = usage.reset_time.ToDatetime(tzinfo=UTC) if usage.HasField("reset_time") else None
    if not usage.unlimited:
        response.headers.update(rate_limit_headers(usage.limit, usage.remaining, reset))
    return caller


CurrentCaller = Annotated[Caller, Depends(authenticate)]


def require_admin(request: Request) -> None:
    expected: str = request.app.state.settings.admin_token
    if not expected:
        raise ApiError(
            403, "PERMISSION_DENIED", "the admin surface is disabled (SWARM_GATEWAY_ADMIN_TOKEN unset)"
        )
    token = _bearer(request)
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(401, "UNAUTHENTICATED", "invalid admin token", {"WWW-Authenticate": "Bearer"})


AdminOnly = Depends(require_admin)
