"""The events service's rules: states, the shapes of what it stores and
sends, and the checks on them. No SQL and no protobuf here.

A webhook is ACTIVE or DISABLED (by its owner, a 410, or a failing period).
Each (event, active subscribed webhook) is one delivery:

    PENDING ──claim──▶ DELIVERING ──2xx──▶ SUCCEEDED
       ▲                  │  │
       └── retry due ─────┘  └── schedule spent / 410 / disabled ──▶ FAILED
    (lease lapsed: claimed again)        redeliver / recover ──▶ PENDING

DELIVERING is internal (a claim with a lease); callers see it as PENDING.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from swarmcommon.errors import InvalidArgument
from swarmcommon.event_catalogue import CATALOGUE

MAX_EVENT_TYPES = 50
MAX_EVENT_TYPE = 64
MAX_DESCRIPTION = 500
MAX_SOURCE = 32
MAX_SUBJECT = 200
MAX_TRACEPARENT = 64
DEFAULT_ROTATION_GRACE = timedelta(hours=24)
MAX_ROTATION_GRACE = timedelta(days=7)
EVENT_TYPE_RE = re.compile(r"^[a-z][a-z_]*(\.[a-z_]+)+$")
ALL_TYPES = "*"
TEST_EVENT_TYPE = "webhook.test"
WEBHOOK_DISABLED_EVENT = "webhook.disabled"
# Which service's outbox may publish which event types (by prefix); an event
# type nobody owns (webhook.*, which only events itself emits) is nobody's.
EVENT_OWNERS: dict[str, tuple[str, ...]] = {
    "ticketing": ("ticket.", "pr.", "collaboration.", "project.", "template."),
    "vmhost": ("agent.",),
}
# Every relaying outbox emits these about itself.
SHARED_EVENT_TYPES = frozenset({"outbox.dead_lettered"})
# Every event type some service emits (swarmcommon.event_catalogue): what a
# subscription or a filter may name (a typo such as "ticket.complete" would
# otherwise never match).
KNOWN_EVENT_TYPES = frozenset(CATALOGUE)


def publishable(service: str, event_type: str) -> bool:
    """May `service` publish events of `event_type`?"""
    if event_type in SHARED_EVENT_TYPES:
        return service in EVENT_OWNERS
    return event_type.startswith(EVENT_OWNERS.get(service, ()))


# The first characters of a secret ("whsec_" + 6), enough to tell two apart.
SECRET_PREFIX_LENGTH = 12


class WebhookState(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class DeliveryStatus(enum.StrEnum):
    """A delivery as stored, including the internal claimed state."""

    PENDING = "pending"
    DELIVERING = "delivering"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class DeliveryState(enum.StrEnum):
    """A delivery as callers see it."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class AttemptOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Deliveries still on their way: claimable when due, never purged.
LIVE_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING)
FINISHED_STATUSES = (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED)


def public_state(status: DeliveryStatus) -> DeliveryState:
    return DeliveryState.PENDING if status in LIVE_STATUSES else DeliveryState(status.value)


@dataclass(frozen=True)
class Event:
    id: str
    tenant_id: str
    type: str
    source: str
    subject: str
    data: dict[str, Any]
    traceparent: str | None
    created_at: datetime


@dataclass(frozen=True)
class Webhook:
    id: str
    tenant_id: str
    url: str
    event_types: list[str]
    description: str
    state: WebhookState
    disabled_reason: str | None
    disabled_at: datetime | None
    consecutive_failures: int
    last_success_at: datetime | None
    last_failure_at: datetime | None
    secret_prefix: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class CreatedWebhook:
    webhook: Webhook
    # Shown in this answer only (and in a replay of it).
    secret: str


@dataclass(frozen=True)
class RotatedSecret:
    webhook: Webhook
    secret: str
    old_secret_expires_at: datetime


@dataclass(frozen=True)
class WebhookChanges:
    """An update: only the fields named in `paths` are applied."""

    paths: list[str]
    url: str = ""
    event_types: list[str] | None = None
    description: str = ""
    state: WebhookState | None = None


UPDATABLE_PATHS = ("url", "event_types", "description", "state")


@dataclass(frozen=True)
class Delivery:
    id: str
    tenant_id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    created_at: datetime

    @property
    def state(self) -> DeliveryState:
        return public_state(self.status)


@dataclass(frozen=True)
class DeliveryAttempt:
    """One HTTP request to a webhook: a row of the delivery log."""

    id: str
    delivery_id: str  # "" for a test send
    tenant_id: str
    webhook_id: str
    event_id: str
    event_type: str
    attempt: int
    outcome: AttemptOutcome
    status_code: int | None
    response_body: str
    response_truncated: bool
    error: str | None
    duration_ms: int
    next_retry_at: datetime | None
    created_at: datetime
    test: bool


@dataclass(frozen=True)
class Signing:
    """The secrets a webhook signs with: the current one, and the previous
    one until its rotation grace period ends."""

    secret: str
    previous_secret: str | None
    previous_expires_at: datetime | None


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery claimed for sending, with everything the send needs."""

    delivery: Delivery
    event_data: dict[str, Any] | None  # None: the event is past retention
    event_created_at: datetime | None
    webhook_state: WebhookState | None  # None: the webhook was deleted
    url: str
    signing: Signing
    failing_since: datetime | None

    def undeliverable(self) -> str | None:
        """Why this delivery cannot be sent at all (it then simply fails)."""
        if self.webhook_state is None:
            return "the webhook was deleted"
        if self.webhook_state != WebhookState.ACTIVE:
            return "the webhook is disabled"
        if self.event_data is None:
            return "the event is past the event log's retention"
        return None


@dataclass(frozen=True)
class Outcome:
    """What one HTTP attempt got back."""

    status_code: int | None
    body: str
    truncated: bool
    error: str | None
    # The raw Retry-After header; the retry policy reads it.
    retry_after: str | None
    duration_ms: int
    # The attempt ran into its deadline (the endpoint is slow).
    timed_out: bool = False
    # Abandoned because the service is stopping: not the endpoint's fault.
    aborted: bool = False
    # Response bytes read off the connection (headers and body).
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300 and not self.aborted

    @property
    def outcome(self) -> AttemptOutcome:
        return AttemptOutcome.SUCCEEDED if self.ok else AttemptOutcome.FAILED


def logged_attempt(
    outcome: Outcome,
    *,
    delivery_id: str,
    tenant_id: str,
    webhook_id: str,
    event_id: str,
    event_type: str,
    attempt: int,
    next_retry_at: datetime | None,
    at: datetime,
    test: bool = False,
) -> DeliveryAttempt:
    """The delivery log's row for one HTTP attempt and what it got."""
    return DeliveryAttempt(
        id=str(uuid.uuid4()),
        delivery_id=delivery_id,
        tenant_id=tenant_id,
        webhook_id=webhook_id,
        event_id=event_id,
        event_type=event_type,
        attempt=attempt,
        outcome=outcome.outcome,
        status_code=outcome.status_code,
        response_body=outcome.body,
        response_truncated=outcome.truncated,
        error=outcome.error,
        duration_ms=outcome.duration_ms,
        next_retry_at=next_retry_at,
        created_at=at,
        test=test,
    )


# -- checks ------------------------------------------------------------------------------------


def check_event_type(field: str, value: str) -> str:
    if len(value) > MAX_EVENT_TYPE or not EVENT_TYPE_RE.match(value):
        raise InvalidArgument(field, f"must look like 'ticket.completed' (got {value[:MAX_EVENT_TYPE]!r})")
    return value


def check_event_types(types: Sequence[str], field: str = "event_types") -> list[str]:
    """Subscribed types: at least one, each a dotted type or "*"; duplicates dropped."""
    if not types:
        raise InvalidArgument(field, 'name at least one event type, or "*" for all')
    if len(types) > MAX_EVENT_TYPES:
        raise InvalidArgument(field, f"too many event types ({len(types)} > {MAX_EVENT_TYPES})")
    for i, t in enumerate(types):
        if t != ALL_TYPES and (len(t) > MAX_EVENT_TYPE or not EVENT_TYPE_RE.match(t)):
            raise InvalidArgument(
                f"{field}[{i}]", f'must be an event type like "ticket.completed" or "*" (got {t[:64]!r})'
            )
        if t != ALL_TYPES and t not in KNOWN_EVENT_TYPES:
            family = sorted(k for k in KNOWN_EVENT_TYPES if k.split(".")[0] == t.split(".")[0])
            hint = f"; {t.split('.')[0]}.* types are {', '.join(family)}" if family else ""
            raise InvalidArgument(f"{field}[{i}]", f"no service emits {t!r}{hint}")
    return list(dict.fromkeys(types))


def is_subscribed(event_types: Sequence[str], event_type: str) -> bool:
    return ALL_TYPES in event_types or event_type in event_types


def check_rotation_grace(grace: timedelta | None) -> timedelta:
    grace = DEFAULT_ROTATION_GRACE if grace is None else grace
    if not timedelta(0) <= grace <= MAX_ROTATION_GRACE:
        raise InvalidArgument("old_secret_grace_period", "must be between 0 and 7 days")
    return grace


def check_changes(changes: WebhookChanges) -> WebhookChanges:
    if not changes.paths:
        raise InvalidArgument("update_mask", "name at least one of url, event_types, description, state")
    for path in changes.paths:
        if path not in UPDATABLE_PATHS:
            raise InvalidArgument(
                "update_mask", f"cannot update {path!r}; use url, event_types, description, state"
            )
    if "state" in changes.paths and changes.state is None:
        raise InvalidArgument("webhook.state", "must be ACTIVE or DISABLED when update_mask has 'state'")
    if "event_types" in changes.paths:
        check_event_types(changes.event_types or [], "webhook.event_types")
    return changes


def webhook_body(event_type: str, created_at: datetime, data: Any) -> dict[str, Any]:
    """The JSON a receiver gets: {"event", "timestamp", "data"}."""
    return {"event": event_type, "timestamp": created_at.isoformat().replace("+00:00", "Z"), "data": data}


def sample_event_data(webhook_id: str) -> dict[str, Any]:
    """The fixed payload of a SendTestEvent."""
    return {"test": True, "webhook_id": webhook_id, "message": "A test event sent from Swarm."}
