"""Who is calling: API keys for tenants, a separate token for operators.

Every tenant request is authenticated through the quota service (cached for
a few seconds) and charged one `api_calls_per_hour`; the response carries
X-RateLimit-Limit/Remaining/Reset, and an exhausted budget is 429 with
Retry-After (QuotaExceeded, in errors.py). guard.py runs these before the
request body is read; deps.py hands the result to the routes.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from datetime import UTC

from starlette.datastructures import Headers

from swarm.quota.v1 import quota_pb2 as qpb
from swarm_gateway.backends import Backends
from swarm_gateway.errors import rate_limit_headers
from swarmcommon.errors import PermissionDenied, Unauthenticated

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


def bearer_token(headers: Headers, what: str = "api key") -> str:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(f"missing credentials: send 'Authorization: Bearer <{what}>'")
    return token.strip()


def authenticate(backends: Backends, cache: KeyCache, secret: str) -> tuple[Caller, dict[str, str]]:
    """The caller of an API key, charged one API call; and the rate-limit headers.

    Raises Unauthenticated for an unknown or revoked key (quota's answer) and
    QuotaExceeded past the hourly limit."""
    caller = cache.get(secret)
    if caller is None:
        reply = backends.quota.stub.Authenticate(qpb.AuthenticateRequest(secret=secret))
        caller = Caller(reply.tenant.id, reply.api_key_id)
        cache.put(secret, caller)
    # No request_id: a rate-limit tick needs no deduplication, and an id per
    # call would make quota keep a row per API call.
    usage = backends.quota.consume(caller.tenant_id, qpb.RESOURCE_API_CALLS_PER_HOUR, 1, request_id="")
    if usage.unlimited:
        return caller, {}
    reset = usage.reset_time.ToDatetime(tzinfo=UTC) if usage.HasField("reset_time") else None
    return caller, rate_limit_headers(usage.limit, usage.remaining, reset)


def check_admin(expected: str, headers: Headers) -> None:
    """The operator's token, compared in constant time; no token configured: no admin surface."""
    if not expected:
        raise PermissionDenied("the admin surface is disabled (SWARM_GATEWAY_ADMIN_TOKEN unset)")
    token = bearer_token(headers, what="admin token")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthenticated("invalid admin token")
