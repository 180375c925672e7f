"""gRPC adapter only: proto in -> domain call -> proto out (see wire.py)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from swarm.events.v1 import events_pb2 as pb
from swarm.events.v1 import events_pb2_grpc as pb_grpc
from swarm_events import wire
from swarm_events.domain import MAX_DESCRIPTION, TEST_EVENT_TYPE, check_event_type, publishable
from swarm_events.probes import Probes
from swarm_events.stores.attempts import AttemptStore
from swarm_events.stores.deliveries import DeliveryStore
from swarm_events.stores.events import EventLog
from swarm_events.stores.webhooks import WebhookStore
from swarm_events.stream import LiveFeed
from swarmcommon import validation as v
from swarmcommon.authz import Access, CallerKind, allow, current_caller
from swarmcommon.errors import InvalidArgument, PermissionDenied
from swarmcommon.idempotency import request_key
from swarmcommon.pagination import page_size
from swarmcommon.protos import timestamp

# Who may call what (swarmcommon.authz). Events come only from the services
# whose outboxes are relayed here; everything else is the gateway's.
ADMIN = allow("gateway", operators=True)
ACCESS: Access = {
    "Publish": allow("ticketing", "vmhost"),
    "ListEvents": ADMIN,
    "StreamEvents": ADMIN,
    "CreateWebhook": ADMIN,
    "GetWebhook": ADMIN,
    "ListWebhooks": ADMIN,
    "UpdateWebhook": ADMIN,
    "DeleteWebhook": ADMIN,
    "RotateWebhookSecret": ADMIN,
    "SendTestEvent": ADMIN,
    "ListDeliveryAttempts": ADMIN,
    "RedeliverDelivery": ADMIN,
    "RecoverFailedDeliveries": ADMIN,
}


class EventsServicer(pb_grpc.EventsServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        log: EventLog,
        webhooks: WebhookStore,
        deliveries: DeliveryStore,
        attempts: AttemptStore,
        probes: Probes,
        feed: LiveFeed,
    ) -> None:
        self.log = log
        self.webhooks = webhooks
        self.deliveries = deliveries
        self.attempts = attempts
        self.probes = probes
        self.feed = feed

    # -- the event log --------------------------------------------------------------------------

    def Publish(self, request: pb.PublishRequest, context: grpc.ServicerContext) -> pb.PublishResponse:
        batch = wire.publish_batch(request, self.log.clock.now())
        caller = current_caller()
        if caller.kind is CallerKind.SERVICE:
            foreign = sorted({e.type for e in batch if not publishable(caller.name, e.type)})
            if foreign:  # the whole batch is refused: nothing is stored
                raise PermissionDenied(
                    f"{caller} may not publish {', '.join(foreign)}: those events are not its own",
                    reason="EVENT_TYPE_NOT_OWNED",
                )
        accepted, duplicates = self.log.publish(batch)
        return pb.PublishResponse(accepted_event_ids=accepted, duplicate_event_ids=duplicates)

    def ListEvents(
        self, request: pb.ListEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListEventsResponse:
        page = self.log.list_events(
            v.name_id("tenant_id", request.tenant_id),
            wire.list_types(request.types),
            v.bounded_text("subject", request.subject, 200) or None,
            wire.optional_time(request, "start_time"),
            wire.optional_time(request, "end_time"),
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListEventsResponse(
            events=[wire.event_to_proto(e) for e in page.items], next_page_token=page.next_page_token
        )

    def StreamEvents(
        self, request: pb.StreamEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamEventsResponse]:
        tenant = v.name_id("tenant_id", request.tenant_id)
        types = wire.type_filter("types", request.types)
        start = wire.optional_time(request, "start_time")
        with self.feed.slot(tenant):
            events = self.feed.follow(tenant, types, start, context.is_active)
            # Headers now, before any event: the caller knows the stream is
            # open (or gets the error above) without waiting for traffic.
            context.send_initial_metadata(())
            for event in events:
                yield pb.StreamEventsResponse(event=wire.event_to_proto(event))

    # -- webhooks -------------------------------------------------------------------------------

    def CreateWebhook(
        self, request: pb.CreateWebhookRequest, context: grpc.ServicerContext
    ) -> pb.CreateWebhookResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        created = self.webhooks.create(
            tenant,
            request.url,
            list(request.event_types),
            v.bounded_text("description", request.description, MAX_DESCRIPTION),
            request_key(tenant, request),
        )
        return pb.CreateWebhookResponse(webhook=wire.webhook_to_proto(created.webhook), secret=created.secret)

    def GetWebhook(
        self, request: pb.GetWebhookRequest, context: grpc.ServicerContext
    ) -> pb.GetWebhookResponse:
        hook = self.webhooks.get(
            v.name_id("tenant_id", request.tenant_id), v.uuid_id("webhook_id", request.webhook_id)
        )
        return pb.GetWebhookResponse(webhook=wire.webhook_to_proto(hook))

    def ListWebhooks(
        self, request: pb.ListWebhooksRequest, context: grpc.ServicerContext
    ) -> pb.ListWebhooksResponse:
        page = self.webhooks.list_webhooks(
            v.name_id("tenant_id", request.tenant_id),
            wire.WEBHOOK_STATE.from_proto("state", request.state),
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListWebhooksResponse(
            webhooks=[wire.webhook_to_proto(w) for w in page.items], next_page_token=page.next_page_token
        )

    def UpdateWebhook(
        self, request: pb.UpdateWebhookRequest, context: grpc.ServicerContext
    ) -> pb.UpdateWebhookResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        hook = self.webhooks.update(
            tenant,
            v.uuid_id("webhook.id", request.webhook.id),
            wire.webhook_changes(request),
            request_key(tenant, request),
        )
        return pb.UpdateWebhookResponse(webhook=wire.webhook_to_proto(hook))

    def DeleteWebhook(
        self, request: pb.DeleteWebhookRequest, context: grpc.ServicerContext
    ) -> pb.DeleteWebhookResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        self.webhooks.delete(
            tenant,
            v.uuid_id("webhook_id", request.webhook_id),
            request_key(tenant, request),
        )
        return pb.DeleteWebhookResponse()

    def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: grpc.ServicerContext
    ) -> pb.RotateWebhookSecretResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        rotated = self.webhooks.rotate(
            tenant,
            v.uuid_id("webhook_id", request.webhook_id),
            wire.optional_duration(request, "old_secret_grace_period"),
            request_key(tenant, request),
        )
        return pb.RotateWebhookSecretResponse(
            webhook=wire.webhook_to_proto(rotated.webhook),
            secret=rotated.secret,
            old_secret_expire_time=timestamp(rotated.old_secret_expires_at),
        )

    # -- the delivery log, test sends, redelivery and recovery ---------------------------------

    def ListDeliveryAttempts(
        self, request: pb.ListDeliveryAttemptsRequest, context: grpc.ServicerContext
    ) -> pb.ListDeliveryAttemptsResponse:
        page = self.attempts.list_attempts(
            v.name_id("tenant_id", request.tenant_id),
            v.uuid_id("webhook_id", request.webhook_id),
            page_size(request.page_size),
            request.page_token,
            event_id=wire.optional_uuid("event_id", request.event_id),
            delivery_id=wire.optional_uuid("delivery_id", request.delivery_id),
            outcome=wire.ATTEMPT_OUTCOME.from_proto("outcome", request.outcome),
        )
        return pb.ListDeliveryAttemptsResponse(
            attempts=[wire.attempt_to_proto(a) for a in page.items], next_page_token=page.next_page_token
        )

    def SendTestEvent(
        self, request: pb.SendTestEventRequest, context: grpc.ServicerContext
    ) -> pb.SendTestEventResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        attempt = self.probes.send_test(
            tenant,
            v.uuid_id("webhook_id", request.webhook_id),
            check_event_type("event_type", request.event_type or TEST_EVENT_TYPE),
            request_key(tenant, request),
        )
        return pb.SendTestEventResponse(attempt=wire.attempt_to_proto(attempt))

    def RedeliverDelivery(
        self, request: pb.RedeliverDeliveryRequest, context: grpc.ServicerContext
    ) -> pb.RedeliverDeliveryResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        delivery = self.deliveries.redeliver(
            tenant,
            v.uuid_id("delivery_id", request.delivery_id),
            request_key(tenant, request),
        )
        return pb.RedeliverDeliveryResponse(delivery=wire.delivery_to_proto(delivery))

    def RecoverFailedDeliveries(
        self, request: pb.RecoverFailedDeliveriesRequest, context: grpc.ServicerContext
    ) -> pb.RecoverFailedDeliveriesResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        since = wire.optional_time(request, "start_time")
        if since is None:
            raise InvalidArgument("start_time", "is required: recover failed deliveries created since when?")
        count = self.deliveries.recover(
            tenant,
            v.uuid_id("webhook_id", request.webhook_id),
            since,
            request_key(tenant, request),
        )
        return pb.RecoverFailedDeliveriesResponse(recovered_count=count)
