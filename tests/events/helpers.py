"""Builders for the events tests: a live events server and its calls."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from google.protobuf import struct_pb2

from swarm.events.v1 import events_pb2 as pb
from swarm.events.v1 import events_pb2_grpc as pb_grpc
from swarm_events import server as events_server


@dataclass
class Live:
    app: events_server.Events
    stub: pb_grpc.EventsServiceStub


def publish(live: Live, tenant_id: str, type_: str, **data: str) -> str:
    payload = struct_pb2.Struct()
    payload.update(data)
    event_id = str(uuid.uuid4())
    live.stub.Publish(
        pb.PublishRequest(
            events=[pb.Event(id=event_id, tenant_id=tenant_id, type=type_, source="ticketing", data=payload)]
        )
    )
    return event_id


def hook(live: Live, url: str, types: list[str], tenant_id: str = "acme") -> tuple[str, str]:
    created = live.stub.CreateWebhook(
        pb.CreateWebhookRequest(tenant_id=tenant_id, url=url, event_types=types)
    )
    return created.webhook.id, created.secret


def attempts(live: Live, webhook_id: str, tenant_id: str = "acme") -> list[pb.DeliveryAttempt]:
    return list(
        live.stub.ListDeliveryAttempts(
            pb.ListDeliveryAttemptsRequest(tenant_id=tenant_id, webhook_id=webhook_id)
        ).attempts
    )
