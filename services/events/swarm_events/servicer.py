"""gRPC adapter: the event log, live streams, webhook subscriptions and the
delivery log with test sends, redelivery and recovery."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.protobuf.duration_pb2 import Duration

from swarm.events.v1 import events_pb2 as pb
from swarm.events.v1 import events_pb2_grpc as pb_grpc
from swarm_events.dispatcher import Dispatcher
from swarm_events.store import Event, EventStore
from swarm_events.stream import LiveFeed
from swarm_events.webhooks import WebhookRecord, WebhookStore, check_event_types
from swarmcommon import validation as v
from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import page_size
from swarmcommon.protos import timestamp

MAX_BATCH = 1000
MAX_DATA = 256 * 1024
TYPE_RE = re.compile(r"^[a-z][a-z_]*(\.[a-z_]+)+$")


def _event_type(field: str, value: str) -> str:
    if not TYPE_RE.match(value) or len(value) > 64:
        raise InvalidArgument(field, f"must look like 'ticket.completed' (got {value[:64]!r})")
    return value


def _event_from_proto(i: int, e: pb.Event, received: object) -> Event:
    f = f"events[{i}]"
    _event_type(f"{f}.type", e.type)
    if e.data.ByteSize() > MAX_DATA:
        raise InvalidArgument(f"{f}.data", f"is too large (> {MAX_DATA} bytes)")
    return Event(
        id=v.uuid_id(f"{f}.id", e.id),
        tenant_id=v.name_id(f"{f}.tenant_id", e.tenant_id),
        type=e.type,
        source=v.required_text(f"{f}.source", e.source, 32),
        subject=v.bounded_text(f"{f}.subject", e.subject, 200),
        data=json_format.MessageToDict(e.data),
        traceparent=v.bounded_text(f"{f}.traceparent", e.traceparent, 64) or None,
        created_at=e.create_time.ToDatetime(tzinfo=UTC) if e.HasField("create_time") else received,  # type: ignore[arg-type]
    )


def _event_to_proto(e: Event) -> pb.Event:
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


_STATES: dict[int, str] = {pb.WEBHOOK_STATE_ACTIVE: "active", pb.WEBHOOK_STATE_DISABLED: "disabled"}


def _state_from_proto(field: str, value: int) -> str | None:
    if value == pb.WEBHOOK_STATE_UNSPECIFIED:
        return None
    if value not in _STATES:
        raise InvalidArgument(field, f"unknown state {value}")
    return _STATES[value]


def _webhook_to_proto(w: WebhookRecord) -> pb.Webhook:
    return pb.Webhook(
        id=w.id,
        tenant_id=w.tenant_id,
        url=w.url,
        event_types=w.event_types,
        description=w.description,
        state=pb.WEBHOOK_STATE_ACTIVE if w.state == "active" else pb.WEBHOOK_STATE_DISABLED,
        disabled_reason=w.disabled_reason or "",
        disable_time=timestamp(w.disabled_at),
        consecutive_failure_count=w.consecutive_failures,
        last_success_time=timestamp(w.last_success_at),
        last_failure_time=timestamp(w.last_failure_at),
        secret_prefix=w.secret_prefix,
        create_time=timestamp(w.created_at),
        update_time=timestamp(w.updated_at),
    )


_DELIVERY_STATES = {
    "pending": pb.DELIVERY_STATE_PENDING,
    "delivering": pb.DELIVERY_STATE_PENDING,
    "succeeded": pb.DELIVERY_STATE_SUCCEEDED,
    "failed": pb.DELIVERY_STATE_FAILED,
}


def _delivery_to_proto(d: Any, event_type: str) -> pb.Delivery:
    return pb.Delivery(
        id=d.id,
        webhook_id=d.webhook_id,
        event_id=d.event_id,
        event_type=event_type,
        state=_DELIVERY_STATES[d.status],
        attempt_count=d.attempts,
        next_attempt_time=timestamp(d.next_attempt_at) if d.status in ("pending", "delivering") else None,
        create_time=timestamp(d.created_at),
    )


def _attempt_to_proto(a: Any) -> pb.DeliveryAttempt:
    return pb.DeliveryAttempt(
        id=a.id,
        delivery_id=a.delivery_id,
        webhook_id=a.webhook_id,
        event_id=a.event_id,
        event_type=a.event_type,
        attempt_number=a.attempt,
        outcome=pb.ATTEMPT_OUTCOME_SUCCEEDED if a.succeeded else pb.ATTEMPT_OUTCOME_FAILED,
        response_status_code=a.status_code or 0,
        response_body=a.response_body,
        response_body_truncated=a.response_truncated,
        error=a.error or "",
        duration=Duration(seconds=a.duration_ms // 1000, nanos=(a.duration_ms % 1000) * 1_000_000),
        attempt_time=timestamp(a.created_at),
        next_retry_time=timestamp(a.next_retry_at),
        test=a.test,
    )


def _event_types(field: str, types: Any) -> list[str]:
    return check_event_types(list(types), field) if types else []


class EventsServicer(pb_grpc.EventsServiceServicer):  # type: ignore[misc]
    def __init__(
        self, store: EventStore, webhooks: WebhookStore, dispatcher: Dispatcher, feed: LiveFeed
    ) -> None:
        self.store = store
        self.webhooks = webhooks
        self.dispatcher = dispatcher
        self.feed = feed

    def Publish(self, request: pb.PublishRequest, context: grpc.ServicerContext) -> pb.PublishResponse:
        if not request.events:
            raise InvalidArgument("events", "a batch needs at least one event")
        if len(request.events) > MAX_BATCH:
            raise InvalidArgument(
                "events", f"too many events in one batch ({len(request.events)} > {MAX_BATCH})"
            )
        now = self.store.clock.now()
        # The whole batch is checked before anything is stored.
        batch = [_event_from_proto(i, e, now) for i, e in enumerate(request.events)]
        accepted, duplicates = self.store.publish(batch)
        return pb.PublishResponse(accepted_event_ids=accepted, duplicate_event_ids=duplicates)

    def ListEvents(
        self, request: pb.ListEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListEventsResponse:
        page = self.store.list_events(
            v.name_id("tenant_id", request.tenant_id),
            [v.required_text(f"types[{i}]", t, 64) for i, t in enumerate(request.types)],
            v.bounded_text("subject", request.subject, 200) or None,
            request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None,
            request.end_time.ToDatetime(tzinfo=UTC) if request.HasField("end_time") else None,
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListEventsResponse(
            events=[_event_to_proto(e) for e in page.items], next_page_token=page.next_page_token
        )

    # -- webhooks ---------------------------------------------------------------------

    def CreateWebhook(
        self, request: pb.CreateWebhookRequest, context: grpc.ServicerContext
    ) -> pb.CreateWebhookResponse:
        hook, secret = self.webhooks.create(
            v.name_id("tenant_id", request.tenant_id),
            request.url,
            list(request.event_types),
            v.bounded_text("description", request.description, 500),
            v.optional_request_id(request.request_id),
        )
        return pb.CreateWebhookResponse(webhook=_webhook_to_proto(hook), secret=secret)

    def GetWebhook(
        self, request: pb.GetWebhookRequest, context: grpc.ServicerContext
    ) -> pb.GetWebhookResponse:
        hook = self.webhooks.get(
            v.name_id("tenant_id", request.tenant_id), v.uuid_id("webhook_id", request.webhook_id)
        )
        return pb.GetWebhookResponse(webhook=_webhook_to_proto(hook))

    def ListWebhooks(
        self, request: pb.ListWebhooksRequest, context: grpc.ServicerContext
    ) -> pb.ListWebhooksResponse:
        page = self.webhooks.list_webhooks(
            v.name_id("tenant_id", request.tenant_id),
            _state_from_proto("state", request.state),
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListWebhooksResponse(
            webhooks=[_webhook_to_proto(w) for w in page.items], next_page_token=page.next_page_token
        )

    def UpdateWebhook(
        self, request: pb.UpdateWebhookRequest, context: grpc.ServicerContext
    ) -> pb.UpdateWebhookResponse:
        hook = self.webhooks.update(
            v.name_id("tenant_id", request.tenant_id),
            v.uuid_id("webhook.id", request.webhook.id),
            list(request.update_mask.paths),
            request.webhook.url,
            list(request.webhook.event_types),
            v.bounded_text("webhook.description", request.webhook.description, 500),
            _state_from_proto("webhook.state", request.webhook.state),
        )
        return pb.UpdateWebhookResponse(webhook=_webhook_to_proto(hook))

    def DeleteWebhook(
        self, request: pb.DeleteWebhookRequest, context: grpc.ServicerContext
    ) -> pb.DeleteWebhookResponse:
        self.webhooks.delete(
            v.name_id("tenant_id", request.tenant_id), v.uuid_id("webhook_id", request.webhook_id)
        )
        return pb.DeleteWebhookResponse()

    def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: grpc.ServicerContext
    ) -> pb.RotateWebhookSecretResponse:
        grace = (
            request.old_secret_grace_period.ToTimedelta()
            if request.HasField("old_secret_grace_period")
            else None
        )
        hook, secret, expires = self.webhooks.rotate(
            v.name_id("tenant_id", request.tenant_id), v.uuid_id("webhook_id", request.webhook_id), grace
        )
        return pb.RotateWebhookSecretResponse(
            webhook=_webhook_to_proto(hook), secret=secret, old_secret_expire_time=timestamp(expires)
        )

    def ListDeliveryAttempts(
        self, request: pb.ListDeliveryAttemptsRequest, context: grpc.ServicerContext
    ) -> pb.ListDeliveryAttemptsResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        webhook_id = v.uuid_id("webhook_id", request.webhook_id)
        if request.outcome not in (
            pb.ATTEMPT_OUTCOME_UNSPECIFIED,
            pb.ATTEMPT_OUTCOME_SUCCEEDED,
            pb.ATTEMPT_OUTCOME_FAILED,
        ):
            raise InvalidArgument("outcome", f"unknown outcome {request.outcome}")
        self.webhooks.get(tenant, webhook_id)  # NOT_FOUND for another tenant's webhook
        page = self.webhooks.list_attempts(
            tenant,
            webhook_id,
            page_size(request.page_size),
            request.page_token,
            event_id=v.uuid_id("event_id", request.event_id) if request.event_id else None,
            delivery_id=v.uuid_id("delivery_id", request.delivery_id) if request.delivery_id else None,
            succeeded=None
            if request.outcome == pb.ATTEMPT_OUTCOME_UNSPECIFIED
            else request.outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED,
        )
        return pb.ListDeliveryAttemptsResponse(
            attempts=[_attempt_to_proto(a) for a in page.items], next_page_token=page.next_page_token
        )

    def SendTestEvent(
        self, request: pb.SendTestEventRequest, context: grpc.ServicerContext
    ) -> pb.SendTestEventResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        webhook_id = v.uuid_id("webhook_id", request.webhook_id)
        event_type = _event_type("event_type", request.event_type or "webhook.test")
        attempt = self.dispatcher.send_test(tenant, webhook_id, event_type)
        return pb.SendTestEventResponse(attempt=_attempt_to_proto(attempt))

    def RedeliverDelivery(
        self, request: pb.RedeliverDeliveryRequest, context: grpc.ServicerContext
    ) -> pb.RedeliverDeliveryResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        delivery = self.webhooks.redeliver(tenant, v.uuid_id("delivery_id", request.delivery_id))
        event = self.store.get_event(delivery.event_id)
        return pb.RedeliverDeliveryResponse(delivery=_delivery_to_proto(delivery, event.type))

    def RecoverFailedDeliveries(
        self, request: pb.RecoverFailedDeliveriesRequest, context: grpc.ServicerContext
    ) -> pb.RecoverFailedDeliveriesResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        webhook_id = v.uuid_id("webhook_id", request.webhook_id)
        if not request.HasField("start_time"):
            raise InvalidArgument("start_time", "is required: recover failed deliveries created since when?")
        count = self.webhooks.recover(tenant, webhook_id, request.start_time.ToDatetime(tzinfo=UTC))
        return pb.RecoverFailedDeliveriesResponse(recovered_count=count)

    # -- live stream ----------------------------------------------------------------------

    def StreamEvents(
        self, request: pb.StreamEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamEventsResponse]:
        tenant = v.name_id("tenant_id", request.tenant_id)
        types = [t for t in request.types if t != "*"]
        _event_types("types", types)
        start = request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None
        with self.feed.slot():
            # Headers now, before any event: the caller knows the stream is
            # open (or gets the error above) without waiting for traffic.
            context.send_initial_metadata(())
            for event in self.feed.follow(tenant, types, start, context.is_active):
                yield pb.StreamEventsResponse(event=_event_to_proto(event))
