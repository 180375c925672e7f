"""Builders for the events tests: a live events server, its calls, stream
followers and database snapshots."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import sqlalchemy as sa
from google.protobuf import struct_pb2

from swarm.events.v1 import events_pb2 as pb
from swarm.events.v1 import events_pb2_grpc as pb_grpc
from swarm_events import server as events_server
from swarm_events.config import Settings as EventsSettings
from swarm_events.tables import metadata
from swarmcommon.clock import Clock
from swarmcommon.grpcclient import channel, raw_channel, trace_metadata
from tests.support.waiting import eventually

# Fast retries and short deadlines, loopback receivers allowed.
FAST: dict[str, Any] = {
    "listen_address": "127.0.0.1:0",
    "webhook_allow_networks": "127.0.0.0/8",
    "retry_schedule_seconds": "0.05,0.05",
    "retry_jitter": 0,
    "delivery_timeout_seconds": 1.0,
    "dispatcher_poll_seconds": 0.02,
    "stream_poll_seconds": 0.1,
}


@dataclass
class Live:
    app: events_server.Events
    stub: pb_grpc.EventsServiceStub
    channel: grpc.Channel | None = None

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.app.stop(grace=1)


def start_live(db: str, clock: Clock | None = None, **overrides: Any) -> Live:
    """A real events server on `db` with FAST settings, `overrides` on top."""
    app = events_server.start(EventsSettings(**{**FAST, "database_url": db, **overrides}), clock=clock)
    ch = channel(f"127.0.0.1:{app.port}")
    return Live(app, pb_grpc.EventsServiceStub(ch), ch)


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


def get_webhook(live: Live, webhook_id: str, tenant_id: str = "acme") -> pb.Webhook:
    return live.stub.GetWebhook(pb.GetWebhookRequest(tenant_id=tenant_id, webhook_id=webhook_id)).webhook


def snapshot(live: Live) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every events table, to prove a call wrote nothing."""
    with live.app.db.engine.connect() as conn:
        return {
            name: sorted((tuple(row) for row in conn.execute(sa.select(table))), key=repr)
            for name, table in metadata.tables.items()
        }


class Follower:
    """Reads a StreamEvents call on a thread, collecting events.

    The constructor returns once the server answered the call's headers:
    the stream is open (or refused, with `error` set once the thread ends)."""

    def __init__(self, live: Live, request: pb.StreamEventsRequest) -> None:
        self.channel = raw_channel(f"127.0.0.1:{live.app.port}")
        stub = pb_grpc.EventsServiceStub(self.channel)
        self.call = stub.StreamEvents(request, metadata=trace_metadata())
        self.events: list[pb.Event] = []
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        self.call.initial_metadata()

    def _read(self) -> None:
        try:
            for reply in self.call:
                self.events.append(reply.event)
        except grpc.RpcError as exc:
            self.error = exc

    def ids(self) -> list[str]:
        return [e.id for e in self.events]

    def refused(self) -> grpc.RpcError:
        """The error of a call the server refused."""
        self.thread.join(timeout=5)
        assert self.error is not None, "the stream was not refused"
        return self.error

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(timeout=5)
        self.channel.close()


def open_stream(live: Live, request: pb.StreamEventsRequest) -> Follower:
    """A stream that the server accepted, once a place is free (a closed
    stream gives its place back when the server notices, within a poll)."""

    def accepted() -> Follower | None:
        follower = Follower(live, request)
        if follower.call.done():
            follower.close()
            return None
        return follower

    return eventually(accepted, what="an open stream")
