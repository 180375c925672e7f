"""REST resources for webhooks, the delivery log and the event log."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from google.protobuf import json_format
from pydantic import BaseModel, BeforeValidator, Field

from swarm.events.v1 import events_pb2 as epb
from swarm_gateway.enums import ATTEMPT_OUTCOME, DELIVERY_STATE, WEBHOOK_STATE
from swarm_gateway.models import Request, Text, ts

WebhookState = Literal["active", "disabled"]
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _rfc3339(value: Any) -> Any:
    # Only a date-time string, as the schema says: pydantic would otherwise
    # also take numbers as Unix times ("0.5" -> 1970).
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time, e.g. 2030-01-31T12:00:00Z")
    return value


# A time given by the caller; without a zone it is UTC.
Timestamp = Annotated[datetime, BeforeValidator(_rfc3339), Field(strict=False)]
# "*" or a dotted lower-case type; the events service checks each one and
# answers 400 naming the bad entry.
EventType = Text


class WebhookCreate(Request):
    url: Text = Field(min_length=1, max_length=2048, description="https URL receiving signed POSTs")
    events: list[EventType] = Field(
        min_length=1,
        max_length=50,
        description='Event types to deliver, e.g. "ticket.completed"; "*" for all',
    )
    description: Text = Field(default="", max_length=500)


class WebhookUpdate(Request):
    """Only the fields present change; `state: "active"` re-enables a disabled webhook."""

    url: Text | None = Field(default=None, min_length=1, max_length=2048)
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=50)
    description: Text | None = Field(default=None, max_length=500)
    state: WebhookState | None = None


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str
    state: WebhookState
    disabled_reason: str | None
    disabled_at: datetime | None
    consecutive_failures: int
    last_success_at: datetime | None
    last_failure_at: datetime | None
    # The first characters of the signing secret, to tell secrets apart.
    secret_prefix: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_proto(cls, w: epb.Webhook) -> WebhookPublic:
        return cls(
            id=w.id,
            url=w.url,
            events=list(w.event_types),
            description=w.description,
            state=WEBHOOK_STATE.name(w.state),  # type: ignore[arg-type]
            disabled_reason=w.disabled_reason or None,
            disabled_at=ts(w.disable_time, w.HasField("disable_time")),
            consecutive_failures=w.consecutive_failure_count,
            last_success_at=ts(w.last_success_time, w.HasField("last_success_time")),
            last_failure_at=ts(w.last_failure_time, w.HasField("last_failure_time")),
            secret_prefix=w.secret_prefix,
            created_at=ts(w.create_time),  # type: ignore[arg-type]
            updated_at=ts(w.update_time),  # type: ignore[arg-type]
        )


class WebhookCreated(BaseModel):
    webhook: WebhookPublic
    secret: str = Field(description="The whsec_ signing secret; shown only here")


class WebhookPage(BaseModel):
    items: list[WebhookPublic]
    next_page_token: str


class SecretRotate(Request):
    old_secret_grace_seconds: int = Field(
        default=24 * 3600, ge=0, le=7 * 24 * 3600, description="How long the old secret keeps signing"
    )


class SecretRotated(BaseModel):
    webhook: WebhookPublic
    secret: str
    old_secret_expires_at: datetime


class SendTest(Request):
    event_type: Text = Field(default="webhook.test", min_length=1, max_length=64)


class DeliveryAttemptPublic(BaseModel):
    id: str
    # Empty for test sends.
    delivery_id: str
    webhook_id: str
    event_id: str
    event_type: str
    attempt_number: int
    outcome: Literal["succeeded", "failed"]
    response_status_code: int | None
    response_body: str
    response_body_truncated: bool
    error: str | None
    duration_ms: int
    attempted_at: datetime
    next_retry_at: datetime | None
    test: bool

    @classmethod
    def from_proto(cls, a: epb.DeliveryAttempt) -> DeliveryAttemptPublic:
        return cls(
            id=a.id,
            delivery_id=a.delivery_id,
            webhook_id=a.webhook_id,
            event_id=a.event_id,
            event_type=a.event_type,
            attempt_number=a.attempt_number,
            outcome=ATTEMPT_OUTCOME.name(a.outcome),  # type: ignore[arg-type]
            response_status_code=a.response_status_code or None,
            response_body=a.response_body,
            response_body_truncated=a.response_body_truncated,
            error=a.error or None,
            duration_ms=a.duration.seconds * 1000 + a.duration.nanos // 1_000_000,
            attempted_at=ts(a.attempt_time),  # type: ignore[arg-type]
            next_retry_at=ts(a.next_retry_time, a.HasField("next_retry_time")),
            test=a.test,
        )


class DeliveryAttemptPage(BaseModel):
    items: list[DeliveryAttemptPublic]
    next_page_token: str


class DeliveryPublic(BaseModel):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    state: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    next_attempt_at: datetime | None
    created_at: datetime

    @classmethod
    def from_proto(cls, d: epb.Delivery) -> DeliveryPublic:
        return cls(
            id=d.id,
            webhook_id=d.webhook_id,
            event_id=d.event_id,
            event_type=d.event_type,
            state=DELIVERY_STATE.name(d.state),  # type: ignore[arg-type]
            attempt_count=d.attempt_count,
            next_attempt_at=ts(d.next_attempt_time, d.HasField("next_attempt_time")),
            created_at=ts(d.create_time),  # type: ignore[arg-type]
        )


class RecoverRequest(Request):
    # Not strict: JSON has no datetime type, the ISO 8601 string is the value.
    since: datetime = Field(
        strict=False, description="Re-queue failed deliveries created at or after this time"
    )


class RecoverResult(BaseModel):
    recovered_count: int


class EventPublic(BaseModel):
    id: str
    type: str
    source: str
    subject: str
    data: dict[str, Any]
    created_at: datetime
    traceparent: str | None

    @classmethod
    def from_proto(cls, e: epb.Event) -> EventPublic:
        return cls(
            id=e.id,
            type=e.type,
            source=e.source,
            subject=e.subject,
            data=json_format.MessageToDict(e.data),
            created_at=ts(e.create_time),  # type: ignore[arg-type]
            traceparent=e.traceparent or None,
        )


class EventPage(BaseModel):
    items: list[EventPublic]
    next_page_token: str


class EventTypePublic(BaseModel):
    type: str
    producer: str
    description: str
    in_seed: bool
    payload_schema: dict[str, Any]


class EventTypeList(BaseModel):
    items: list[EventTypePublic]
