"""Protobuf <-> domain for the events service, including input checks.

Every bad field is INVALID_ARGUMENT naming it, before anything is stored.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.duration_pb2 import Duration

from swarm.events.v1 import events_pb2 as pb
from swarm_events.domain import (
    ALL_TYPES,
    MAX_DESCRIPTION,
    MAX_EVENT_TYPE,
    MAX_SOURCE,
    MAX_SUBJECT,
    MAX_TRACEPARENT,
    AttemptOutcome,
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    Event,
    Webhook,
    WebhookChanges,
    WebhookState,
    check_event_type,
    check_event_types,
)
from swarmcommon import validation as v
from swarmcommon.enums import EnumCodec
from swarmcommon.errors import InvalidArgument
from swarmcommon.limits import MAX_EVENT_DATA_BYTES
from swarmcommon.protos import timestamp

MAX_BATCH = 1000

WEBHOOK_STATE = EnumCodec(pb.WebhookState, WebhookState)
DELIVERY_STATE = EnumCodec(pb.DeliveryState, DeliveryState)
ATTEMPT_OUTCOME = EnumCodec(pb.AttemptOutcome, AttemptOutcome)


# -- events -----------------------------------------------------------------------------------


def event_from_proto(i: int, e: pb.Event, received: datetime) -> Event:
    f = f"events[{i}]"
    check_event_type(f"{f}.type", e.type)
    if e.data.ByteSize() > MAX_EVENT_DATA_BYTES:
        raise InvalidArgument(f"{f}.data", f"is too large (> {MAX_EVENT_DATA_BYTES} bytes)")
    return Event(
        id=v.uuid_id(f"{f}.id", e.id),
        tenant_id=v.name_id(f"{f}.tenant_id", e.tenant_id),
        type=e.type,
        source=v.required_text(f"{f}.source", e.source, MAX_SOURCE),
        subject=v.bounded_text(f"{f}.subject", e.subject, MAX_SUBJECT),
        data=json_format.MessageToDict(e.data),
        traceparent=v.bounded_text(f"{f}.traceparent", e.traceparent, MAX_TRACEPARENT) or None,
        created_at=optional_time(e, "create_time") or received,
    )


def publish_batch(request: pb.PublishRequest, received: datetime) -> list[Event]:
    """The whole batch, checked before anything is stored."""
    if not request.events:
        raise InvalidArgument("events", "a batch needs at least one event")
    if len(request.events) > MAX_BATCH:
        raise InvalidArgument("events", f"too many events in one batch ({len(request.events)} > {MAX_BATCH})")
    return [event_from_proto(i, e, received) for i, e in enumerate(request.events)]


def event_to_proto(e: Event) -> pb.Event:
    data = struct_pb2.Struct()
    json_format.ParseDict(e.data, data)
    return pb.Event(
        id=e.id,
        tenant_id=e.tenant_id,
        type=e.type,
        source=e.source,
        subject=e.subject,
        data=data,
        create_time=timestamp(e.created_at),
        traceparent=e.traceparent or "",
    )


def type_filter(field: str, types: Any) -> list[str]:
    """Event types to filter on; empty or "*" means all."""
    wanted = [t for t in types if t != ALL_TYPES]
    if wanted:
        check_event_types(wanted, field)
    return wanted


def list_types(types: Any) -> list[str]:
    return [v.required_text(f"types[{i}]", t, MAX_EVENT_TYPE) for i, t in enumerate(types)]


def optional_time(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    value: datetime = getattr(message, field).ToDatetime(tzinfo=UTC)
    return value


def optional_duration(message: Any, field: str) -> timedelta | None:
    if not message.HasField(field):
        return None
    value: timedelta = getattr(message, field).ToTimedelta()
    return value


# -- webhooks ---------------------------------------------------------------------------------


def webhook_to_proto(w: Webhook) -> pb.Webhook:
    return pb.Webhook(
        id=w.id,
        tenant_id=w.tenant_id,
        url=w.url,
        event_types=w.event_types,
        description=w.description,
        state=WEBHOOK_STATE.to_proto(w.state),  # type: ignore[arg-type]
        disabled_reason=w.disabled_reason or "",
        disable_time=timestamp(w.disabled_at),
        consecutive_failure_count=w.consecutive_failures,
        last_success_time=timestamp(w.last_success_at),
        last_failure_time=timestamp(w.last_failure_at),
        secret_prefix=w.secret_prefix,
        create_time=timestamp(w.created_at),
        update_time=timestamp(w.updated_at),
    )


def webhook_changes(request: pb.UpdateWebhookRequest) -> WebhookChanges:
    w = request.webhook
    return WebhookChanges(
        paths=list(request.update_mask.paths),
        url=w.url,
        event_types=list(w.event_types),
        description=v.bounded_text("webhook.description", w.description, MAX_DESCRIPTION),
        state=WEBHOOK_STATE.from_proto("webhook.state", w.state),
    )


# -- deliveries and their log -----------------------------------------------------------------


def delivery_to_proto(d: Delivery) -> pb.Delivery:
    return pb.Delivery(
        id=d.id,
        webhook_id=d.webhook_id,
        event_id=d.event_id,
        event_type=d.event_type,
        state=DELIVERY_STATE.to_proto(d.state),  # type: ignore[arg-type]
        attempt_count=d.attempts,
        next_attempt_time=timestamp(d.next_attempt_at) if d.state == DeliveryState.PENDING else None,
        create_time=timestamp(d.created_at),
    )


def attempt_to_proto(a: DeliveryAttempt) -> pb.DeliveryAttempt:
    return pb.DeliveryAttempt(
        id=a.id,
        delivery_id=a.delivery_id,
        webhook_id=a.webhook_id,
        event_id=a.event_id,
        event_type=a.event_type,
        attempt_number=a.attempt,
        outcome=ATTEMPT_OUTCOME.to_proto(a.outcome),  # type: ignore[arg-type]
        response_status_code=a.status_code or 0,
        response_body=a.response_body,
        response_body_truncated=a.response_truncated,
        error=a.error or "",
        duration=Duration(seconds=a.duration_ms // 1000, nanos=(a.duration_ms % 1000) * 1_000_000),
        attempt_time=timestamp(a.created_at),
        next_retry_time=timestamp(a.next_retry_at),
        test=a.test,
    )


def optional_uuid(field: str, value: str) -> str | None:
    return v.uuid_id(field, value) if value else None
