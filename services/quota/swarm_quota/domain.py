"""Quota rules: plans, resources, windows, limits, and the wording of refusals.

No SQL and no protobuf here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from swarmcommon import metrics
from swarmcommon.errors import InvalidArgument, QuotaExceeded


class Plan(enum.StrEnum):
    FREE = "free"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class Resource(enum.StrEnum):
    VMS = "vms"
    TICKETS_PER_DAY = "tickets_per_day"
    API_CALLS_PER_HOUR = "api_calls_per_hour"
    COST_USD_MONTH = "cost_usd_month"
    # A limit only: the default LLM cost cap of each ticket (ticketing's
    # projects and tickets may set their own); nothing is counted.
    COST_USD_PER_TICKET = "cost_usd_per_ticket"


# Seed §4's table. COST_USD_MONTH and COST_USD_PER_TICKET (micro-dollars) have no plan default.
PLAN_LIMITS: dict[Plan, dict[Resource, int]] = {
    Plan.FREE: {Resource.VMS: 2, Resource.TICKETS_PER_DAY: 10, Resource.API_CALLS_PER_HOUR: 100},
    Plan.PRO: {Resource.VMS: 20, Resource.TICKETS_PER_DAY: 500, Resource.API_CALLS_PER_HOUR: 5000},
    Plan.ENTERPRISE: {
        Resource.VMS: 100,
        Resource.TICKETS_PER_DAY: 10_000,
        Resource.API_CALLS_PER_HOUR: 100_000,
    },
}

GAUGES = (Resource.VMS,)
WINDOWED = (Resource.TICKETS_PER_DAY, Resource.API_CALLS_PER_HOUR, Resource.COST_USD_MONTH)
# What Reserve may hold: gauges, and estimated spend settled by Release's consume_amount.
SETTLED = (Resource.COST_USD_MONTH,)
RESERVABLE = GAUGES + SETTLED
# Limits read by other services, never consumed or held (and not in GetUsage).
LIMIT_ONLY = (Resource.COST_USD_PER_TICKET,)
COUNTED = tuple(r for r in Resource if r not in LIMIT_ONLY)
# Gauges have one everlasting "window".
GAUGE_WINDOW = datetime(1970, 1, 1, tzinfo=UTC)
MAX_AMOUNT = 10**12
MAX_LIMIT = 10**15


@dataclass(frozen=True)
class Tenant:
    id: str
    display_name: str
    plan: Plan
    overrides: dict[Resource, int]
    created_at: datetime
    updated_at: datetime

    def limit(self, resource: Resource) -> int | None:
        """The limit in force, or None when unlimited."""
        if resource in self.overrides:
            return self.overrides[resource]
        return PLAN_LIMITS[self.plan].get(resource)


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str
    display_name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class Reservation:
    id: str
    tenant_id: str
    resource: Resource
    amount: int
    owner: str
    created_at: datetime
    released_at: datetime | None


@dataclass(frozen=True)
class Usage:
    resource: Resource
    used: int
    limit: int | None
    window_start: datetime | None
    resets_at: datetime | None

    @property
    def remaining(self) -> int:
        return 0 if self.limit is None else max(self.limit - self.used, 0)


def window(resource: Resource, now: datetime) -> tuple[datetime, datetime | None]:
    """The current window of a resource: (start, end), aligned to UTC units."""
    now = now.astimezone(UTC)
    if resource == Resource.TICKETS_PER_DAY:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if resource == Resource.API_CALLS_PER_HOUR:
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    if resource == Resource.COST_USD_MONTH:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        nxt = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        return start, nxt
    return GAUGE_WINDOW, None


def check_counted(resource: Resource) -> Resource:
    if resource in LIMIT_ONLY:
        raise InvalidArgument(
            "resource", f"{resource} is a limit other services read; nothing consumes or holds it"
        )
    return resource


def check_amount(amount: int) -> int:
    if amount <= 0:
        raise InvalidArgument("amount", f"must be positive (got {amount})")
    if amount > MAX_AMOUNT:
        raise InvalidArgument("amount", f"is too large (> {MAX_AMOUNT})")
    return amount


def check_consume_amount(resource: Resource, amount: int) -> int:
    """Release's consume_amount: the actual spend settling a reservation, 0 for none."""
    if amount < 0:
        raise InvalidArgument("consume_amount", f"must not be negative (got {amount})")
    if amount > MAX_AMOUNT:
        raise InvalidArgument("consume_amount", f"is too large (> {MAX_AMOUNT})")
    if amount and resource not in SETTLED:
        raise InvalidArgument(
            "consume_amount", f"only a {Resource.COST_USD_MONTH} reservation settles spend, not {resource}"
        )
    return amount


def check_overrides(overrides: dict[Resource, int]) -> dict[Resource, int]:
    for resource, limit in overrides.items():
        if not 0 <= limit <= MAX_LIMIT:
            raise InvalidArgument("overrides", f"limit for {resource} must be between 0 and {MAX_LIMIT}")
    return overrides


def refusal(
    resource: Resource, current: int, limit: int, resets_at: datetime | None, now: datetime
) -> QuotaExceeded:
    """The seed's wording: what ran out, how much, and what to do about it."""
    when = resets_at.strftime("%Y-%m-%dT%H:%M:%SZ") if resets_at else ""
    message = {
        Resource.VMS: f"VM limit reached ({current}/{limit}). Upgrade plan or wait for VMs to complete.",
        Resource.TICKETS_PER_DAY: (
            f"Ticket limit reached ({current}/{limit} today). Upgrade plan or wait until {when}."
        ),
        Resource.API_CALLS_PER_HOUR: (
            f"API call limit reached ({current}/{limit} this hour). Upgrade plan or wait until {when}."
        ),
        Resource.COST_USD_MONTH: (
            f"Monthly cost budget reached (${current / 1e6:.2f}/${limit / 1e6:.2f}). "
            f"Raise the budget or wait until {when}."
        ),
    }[resource]
    retry_after = resets_at - now if resets_at else None
    metrics.QUOTA_REJECTIONS.labels(resource=resource.value).inc()  # each refusal answered, replays too
    return QuotaExceeded(resource.value, current, limit, resets_at, message, retry_after)
