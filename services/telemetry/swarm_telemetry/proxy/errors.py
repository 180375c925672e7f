"""Refusals in the Anthropic API's own shape, so the official SDKs raise
their usual exceptions (AuthenticationError, RateLimitError, ...):

    {"type": "error", "error": {"type": "rate_limit_error", "message": "..."}}
"""

from __future__ import annotations

import math
from datetime import datetime

import grpc
from starlette.responses import JSONResponse

from swarmcommon.errors import QuotaExceeded, SwarmError

# HTTP status -> the Anthropic error type the SDKs map it to.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
}
# What quota's answers mean for the guest. NOT_FOUND: a tenant quota does not
# know may not spend; anything else unexpected is the platform's fault (500).
STATUS_OF_CODE = {
    grpc.StatusCode.NOT_FOUND: 403,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}


class ProxyError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def response(self, request_id: str = "") -> JSONResponse:
        body = {
            "type": "error",
            "error": {"type": ERROR_TYPES.get(self.status, "api_error"), "message": self.message},
        }
        headers = dict(self.headers)
        if request_id:
            headers["x-swarm-request-id"] = request_id
        if self.status < 500 and self.status != 429:
            headers.setdefault("x-should-retry", "false")
        return JSONResponse(body, status_code=self.status, headers=headers)


def over_budget(tenant_id: str, refused: QuotaExceeded, estimate: int, now: datetime) -> ProxyError:
    """429 naming the budget, what is spent, what this call needs and when it resets.
    Retrying will not help before the reset, so the SDKs are told not to."""
    resets = refused.resets_at
    when = resets.strftime("%Y-%m-%dT%H:%M:%SZ") if resets else "an operator raises it"
    message = (
        f"Monthly LLM cost budget (cost_usd_month) of tenant {tenant_id} is exhausted: "
        f"${refused.current / 1e6:.2f} of ${refused.limit / 1e6:.2f} used or held, and this call "
        f"needs an estimated ${estimate / 1e6:.4f}. The budget resets at {when}; "
        "an operator can raise it before then."
    )
    headers = {"x-should-retry": "false"}
    if resets is not None:
        headers["retry-after"] = str(max(1, math.ceil((resets - now).total_seconds())))
    return ProxyError(429, message, headers)


def from_swarm(err: SwarmError, what: str) -> ProxyError:
    return ProxyError(STATUS_OF_CODE.get(err.code, 500), f"{what}: {err.message}")


# What ticketing's answer to AuthorizeTicketSpend means for the guest: the
# ticket is another agent's or nobody's (403), unknown in its tenant (404).
TICKET_STATUS_OF_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.FAILED_PRECONDITION: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}


def from_ticketing(err: SwarmError, ticket_id: str) -> ProxyError:
    status = TICKET_STATUS_OF_CODE.get(err.code, 500)
    return ProxyError(status, f"this call may not be charged to ticket {ticket_id}: {err.message}")


def ticket_over_budget(
    ticket_id: str, spent: int, cap: int, source: str, estimate: int, held: str
) -> ProxyError:
    """429 naming the ticket's cost cap; `held` says what became of the ticket.
    Retrying will not help until an operator raises the cap, so the SDKs are told not to."""
    message = (
        f"LLM cost cap of ticket {ticket_id} is exhausted: ${spent / 1e6:.4f} of its "
        f"${cap / 1e6:.4f} cap (set on the {source}) spent or in flight, and this call needs an "
        f"estimated ${estimate / 1e6:.4f}. {held}"
    )
    return ProxyError(429, message, {"x-should-retry": "false"})
