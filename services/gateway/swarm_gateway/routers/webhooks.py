"""Webhooks, their delivery log, the event log and the live event stream
(Server-Sent Events), backed by the events service.

As everywhere in the gateway, the tenant comes from the API key: another
tenant's webhook or delivery is 404.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import grpc
from fastapi import APIRouter, Header, Path, Query, status
from fastapi.responses import Response, StreamingResponse
from google.protobuf.duration_pb2 import Duration

from swarm.events.v1 import events_pb2 as epb
from swarm_gateway.deps import BackendsDep, CurrentCaller, Paging, RequestId, SettingsDep
from swarm_gateway.enums import ATTEMPT_OUTCOME, WEBHOOK_STATE
from swarm_gateway.errors import COMMON_ERRORS
from swarm_gateway.models import UUID_PATTERN, to_timestamp
from swarm_gateway.webhook_models import (
    DeliveryAttemptPage,
    DeliveryAttemptPublic,
    DeliveryPublic,
    EventPage,
    EventPublic,
    EventTypeList,
    EventTypePublic,
    RecoverRequest,
    RecoverResult,
    SecretRotate,
    SecretRotated,
    SendTest,
    Timestamp,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    WebhookPublic,
    WebhookState,
    WebhookUpdate,
)
from swarmcommon.errors import InvalidArgument, SwarmError
from swarmcommon.event_catalogue import CATALOGUE

router = APIRouter(prefix="/api", tags=["webhooks"], responses=COMMON_ERRORS)
events_router = APIRouter(prefix="/api", tags=["events"], responses=COMMON_ERRORS)

WebhookId = Annotated[str, Path(pattern=UUID_PATTERN)]
DeliveryId = Annotated[str, Path(pattern=UUID_PATTERN)]
EventTypes = Annotated[list[str], Query(max_length=50, description='Event types; none or "*" means all')]


@router.post("/webhooks", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated)
def create_webhook(
    body: WebhookCreate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> WebhookCreated:
    reply = b.events.stub.CreateWebhook(
        epb.CreateWebhookRequest(
            tenant_id=caller.tenant_id,
            url=body.url,
            event_types=body.events,
            description=body.description,
            request_id=request_id,
        )
    )
    return WebhookCreated(webhook=WebhookPublic.from_proto(reply.webhook), secret=reply.secret)


@router.get("/webhooks", response_model=WebhookPage)
def list_webhooks(
    caller: CurrentCaller, b: BackendsDep, page: Paging, state: WebhookState | None = None
) -> WebhookPage:
    reply = b.events.stub.ListWebhooks(
        epb.ListWebhooksRequest(
            tenant_id=caller.tenant_id,
            state=WEBHOOK_STATE.number(state),  # type: ignore[arg-type]
            page_size=page.size,
            page_token=page.token,
        )
    )
    return WebhookPage(
        items=[WebhookPublic.from_proto(w) for w in reply.webhooks], next_page_token=reply.next_page_token
    )


@router.get("/webhooks/{webhook_id}", response_model=WebhookPublic)
def get_webhook(webhook_id: WebhookId, caller: CurrentCaller, b: BackendsDep) -> WebhookPublic:
    reply = b.events.stub.GetWebhook(epb.GetWebhookRequest(tenant_id=caller.tenant_id, webhook_id=webhook_id))
    return WebhookPublic.from_proto(reply.webhook)


@router.patch("/webhooks/{webhook_id}", response_model=WebhookPublic)
def update_webhook(
    webhook_id: WebhookId, body: WebhookUpdate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> WebhookPublic:
    fields = {"url": "url", "events": "event_types", "description": "description", "state": "state"}
    paths = [fields[name] for name in sorted(body.model_fields_set) if getattr(body, name) is not None]
    if not paths:
        raise InvalidArgument("body", "nothing to change: send url, events, description or state")
    reply = b.events.stub.UpdateWebhook(
        epb.UpdateWebhookRequest(
            tenant_id=caller.tenant_id,
            webhook=epb.Webhook(
                id=webhook_id,
                url=body.url or "",
                event_types=body.events or [],
                description=body.description or "",
                state=WEBHOOK_STATE.number(body.state),  # type: ignore[arg-type]
            ),
            update_mask={"paths": paths},
            request_id=request_id,
        )
    )
    return WebhookPublic.from_proto(reply.webhook)


@router.delete("/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(
    webhook_id: WebhookId, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> Response:
    b.events.stub.DeleteWebhook(
        epb.DeleteWebhookRequest(tenant_id=caller.tenant_id, webhook_id=webhook_id, request_id=request_id)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/webhooks/{webhook_id}/logs", response_model=DeliveryAttemptPage)
def list_delivery_attempts(
    webhook_id: WebhookId,
    caller: CurrentCaller,
    b: BackendsDep,
    page: Paging,
    event_id: Annotated[str | None, Query(pattern=UUID_PATTERN)] = None,
    delivery_id: Annotated[str | None, Query(pattern=UUID_PATTERN)] = None,
    outcome: Annotated[str | None, Query(pattern="^(succeeded|failed)$")] = None,
) -> DeliveryAttemptPage:
    """The delivery log: every attempt with status, duration and the start of the response."""
    reply = b.events.stub.ListDeliveryAttempts(
        epb.ListDeliveryAttemptsRequest(
            tenant_id=caller.tenant_id,
            webhook_id=webhook_id,
            event_id=event_id or "",
            delivery_id=delivery_id or "",
            outcome=ATTEMPT_OUTCOME.number(outcome),  # type: ignore[arg-type]
            page_size=page.size,
            page_token=page.token,
        )
    )
    return DeliveryAttemptPage(
        items=[DeliveryAttemptPublic.from_proto(a) for a in reply.attempts],
        next_page_token=reply.next_page_token,
    )


@router.post("/webhooks/{webhook_id}/test", response_model=DeliveryAttemptPublic)
def send_test_event(
    webhook_id: WebhookId,
    caller: CurrentCaller,
    b: BackendsDep,
    settings: SettingsDep,
    request_id: RequestId,
    body: SendTest | None = None,
) -> DeliveryAttemptPublic:
    """Send one signed test event now and return the attempt (works on disabled webhooks)."""
    reply = b.events.stub.SendTestEvent(
        epb.SendTestEventRequest(
            tenant_id=caller.tenant_id,
            webhook_id=webhook_id,
            event_type=body.event_type if body else "",
            request_id=request_id,
        ),
        # The only call with its own deadline: it waits for the receiver.
        timeout=settings.test_send_timeout_seconds,
    )
    return DeliveryAttemptPublic.from_proto(reply.attempt)


@router.post("/webhooks/{webhook_id}/rotate-secret", response_model=SecretRotated)
def rotate_secret(
    webhook_id: WebhookId,
    caller: CurrentCaller,
    b: BackendsDep,
    request_id: RequestId,
    body: SecretRotate | None = None,
) -> SecretRotated:
    """A new signing secret; the old one keeps signing alongside it for the grace period."""
    grace = Duration(seconds=body.old_secret_grace_seconds if body else 24 * 3600)
    reply = b.events.stub.RotateWebhookSecret(
        epb.RotateWebhookSecretRequest(
            tenant_id=caller.tenant_id,
            webhook_id=webhook_id,
            old_secret_grace_period=grace,
            request_id=request_id,
        )
    )
    return SecretRotated(
        webhook=WebhookPublic.from_proto(reply.webhook),
        secret=reply.secret,
        old_secret_expires_at=reply.old_secret_expire_time.ToDatetime(tzinfo=UTC),
    )


@router.post("/webhooks/{webhook_id}/recover", response_model=RecoverResult)
def recover_failed_deliveries(
    webhook_id: WebhookId, body: RecoverRequest, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> RecoverResult:
    """Re-queue every failed delivery created since a time (409 while the webhook is disabled)."""
    reply = b.events.stub.RecoverFailedDeliveries(
        epb.RecoverFailedDeliveriesRequest(
            tenant_id=caller.tenant_id,
            webhook_id=webhook_id,
            start_time=to_timestamp(body.since),
            request_id=request_id,
        )
    )
    return RecoverResult(recovered_count=reply.recovered_count)


@router.post("/deliveries/{delivery_id}/redeliver", response_model=DeliveryPublic)
def redeliver(
    delivery_id: DeliveryId, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> DeliveryPublic:
    """Send one delivery again now, with the same event id (409 while its webhook is disabled)."""
    reply = b.events.stub.RedeliverDelivery(
        epb.RedeliverDeliveryRequest(
            tenant_id=caller.tenant_id, delivery_id=delivery_id, request_id=request_id
        )
    )
    return DeliveryPublic.from_proto(reply.delivery)


# -- the event log ----------------------------------------------------------------------------


@events_router.get("/event-types", response_model=EventTypeList)
def list_event_types(caller: CurrentCaller) -> EventTypeList:
    """Every event type a webhook may subscribe to, with a JSON Schema of its
    payload (`data`); a subscription naming any other type is 400."""
    return EventTypeList(
        items=[
            EventTypePublic(
                type=t.name,
                producer=t.producer,
                description=t.description,
                in_seed=t.in_seed,
                payload_schema=t.payload_schema,
            )
            for t in CATALOGUE.values()
        ]
    )


@events_router.get("/events", response_model=EventPage)
def list_events(
    caller: CurrentCaller,
    b: BackendsDep,
    page: Paging,
    types: EventTypes = [],  # noqa: B006 - FastAPI copies query defaults
    subject: Annotated[str, Query(max_length=200)] = "",
    since: Timestamp | None = None,
    until: Timestamp | None = None,
) -> EventPage:
    """The tenant's stored events, newest first."""
    reply = b.events.stub.ListEvents(
        epb.ListEventsRequest(
            tenant_id=caller.tenant_id,
            types=[t for t in types if t != "*"],
            subject=subject,
            start_time=to_timestamp(since) if since else None,
            end_time=to_timestamp(until) if until else None,
            page_size=page.size,
            page_token=page.token,
        )
    )
    return EventPage(
        items=[EventPublic.from_proto(e) for e in reply.events], next_page_token=reply.next_page_token
    )


def _sse_id(event: epb.Event) -> str:
    # The time lets a reconnecting client resume (Last-Event-ID) without a lookup.
    created = event.create_time.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    return f"{created}_{event.id}"


def _resume_time(last_event_id: str | None) -> datetime | None:
    if not last_event_id:
        return None
    stamp, _, _ = last_event_id.partition("_")
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise InvalidArgument(
            "Last-Event-ID", "not an id this stream sent (expected <time>_<event id>)"
        ) from None


def _sse(event: epb.Event) -> str:
    body = EventPublic.from_proto(event).model_dump_json()
    return f"id: {_sse_id(event)}\nevent: {event.type}\ndata: {body}\n\n"


@events_router.get(
    "/events/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def stream_events(
    caller: CurrentCaller,
    b: BackendsDep,
    settings: SettingsDep,
    types: EventTypes = [],  # noqa: B006 - FastAPI copies query defaults
    since: Timestamp | None = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=200)] = None,
) -> StreamingResponse:
    """The tenant's events live, as Server-Sent Events (`event:` is the type,
    `data:` the event as JSON). `since` (or a reconnect's Last-Event-ID)
    replays stored events from that time first; dedupe on the event id."""
    start = _resume_time(last_event_id) or since
    stream = b.events.stream(
        epb.StreamEventsRequest(
            tenant_id=caller.tenant_id,
            types=[t for t in types if t != "*"],
            start_time=to_timestamp(start) if start else None,
        )
    )
    # Wait for the backend to open the stream: a refusal (bad types, no place
    # free) becomes an ordinary HTTP error before any SSE is sent.
    await anyio.to_thread.run_sync(stream.wait_open)
    return StreamingResponse(
        _relay(stream, settings.sse_keepalive_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _relay(stream: Any, keepalive: float) -> AsyncIterator[str]:
    """Backend stream -> SSE frames; the backend call is cancelled when the client leaves."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[epb.StreamEventsResponse | SwarmError | None] = asyncio.Queue()

    def pump() -> None:
        try:
            for reply in stream:
                loop.call_soon_threadsafe(queue.put_nowait, reply)
        except SwarmError as exc:
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="sse-pump", daemon=True).start()
    try:
        yield ": stream open\n\n"
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=keepalive)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if item is None:
                return
            if isinstance(item, SwarmError):
                if item.code != grpc.StatusCode.CANCELLED:
                    error = {"status": item.code.name, "message": item.message}
                    yield f"event: error\ndata: {json.dumps(error)}\n\n"
                return
            yield _sse(item.event)
    finally:
        stream.cancel()
