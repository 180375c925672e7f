"""What happens after an attempt: the retry policy, with no I/O.

Svix's schedule (after the 1st failure wait 5 s, then 5 min, 30 min, 2 h,
5 h, 10 h, 10 h), each wait jittered so endpoints that failed together do not
retry together; a `Retry-After` longer than the wait is honoured (up to a
day, so a hostile header cannot park a delivery for ever); 410 Gone
disables the endpoint at once; an endpoint that keeps failing for
`disable_after` is disabled too. Once the schedule is spent the delivery
is FAILED until someone redelivers or recovers it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

from swarm_events.domain import DeliveryStatus, Outcome

SVIX_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
GONE = 410


@dataclass(frozen=True)
class RetryPolicy:
    schedule: tuple[float, ...] = SVIX_SCHEDULE
    jitter: float = 0.2
    disable_after: timedelta = timedelta(days=5)
    max_retry_after: timedelta = timedelta(days=1)


@dataclass(frozen=True)
class Decision:
    status: DeliveryStatus  # SUCCEEDED, PENDING (retry at next_attempt_at) or FAILED
    next_attempt_at: datetime | None
    # The start of the webhook's run of failures after this attempt; None after a success.
    failing_since: datetime | None
    # Set when this attempt disables the webhook.
    disable_reason: str | None = None


def parse_schedule(raw: str) -> tuple[float, ...]:
    """'5,300,1800' -> (5.0, 300.0, 1800.0); an empty string means no retries."""
    return tuple(float(part) for part in raw.split(",") if part.strip())


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from `now`."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError, OverflowError):
        return None


def decide(
    policy: RetryPolicy,
    attempt: int,
    outcome: Outcome,
    failing_since: datetime | None,
    now: datetime,
    uniform: Callable[[float, float], float] = random.uniform,
) -> Decision:
    """The consequence of the `attempt`-th attempt (1-based) of a delivery.

    `failing_since` is the webhook's current run of failures (None if its
    last attempt succeeded)."""
    if outcome.ok:
        return Decision(DeliveryStatus.SUCCEEDED, None, None)
    since = failing_since or now
    if outcome.status_code == GONE:
        return Decision(DeliveryStatus.FAILED, None, since, "the endpoint answered 410 Gone")
    if now - since >= policy.disable_after:
        reason = f"deliveries failed for {now - since} (since {since:%Y-%m-%dT%H:%M:%SZ})"
        return Decision(DeliveryStatus.FAILED, None, since, reason)
    if attempt > len(policy.schedule):
        return Decision(DeliveryStatus.FAILED, None, since)
    return Decision(DeliveryStatus.PENDING, now + _wait(policy, attempt, outcome, now, uniform), since)


def _wait(
    policy: RetryPolicy,
    attempt: int,
    outcome: Outcome,
    now: datetime,
    uniform: Callable[[float, float], float],
) -> timedelta:
    wait = policy.schedule[attempt - 1] * uniform(1 - policy.jitter, 1 + policy.jitter)
    asked = retry_after_seconds(outcome.retry_after, now)
    if asked is not None:
        wait = max(wait, min(asked, policy.max_retry_after.total_seconds()))
    return timedelta(seconds=wait)
