"""The events service: publishing (outbox relays) and the live stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from swarm.events.v1 import events_pb2 as pb
from swarm.events.v1 import events_pb2_grpc as pb_grpc
from swarmcommon.clients.base import ServiceClient
from swarmcommon.clients.channel import DEFAULT_TIMEOUT, MetadataSource
from swarmcommon.tls import ClientTls

# About 31 years: gRPC needs a number, and this one never ends a live stream.
_FOREVER = 1e9


class EventsClient(ServiceClient):
    stub_class = pb_grpc.EventsServiceStub

    def __init__(
        self,
        target: str,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        metadata: MetadataSource | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        super().__init__(target, default_timeout=default_timeout, metadata=metadata, tls=tls)
        # StreamEvents goes through the streaming view: its call stays
        # cancellable (see ServiceChannel).
        self.stream_stub = pb_grpc.EventsServiceStub(self.channel.streaming)

    def publish(self, events: Sequence[pb.Event]) -> list[str]:
        """Append events to the log (idempotent on event id); returns the ids new to it."""
        reply = self.stub.Publish(pb.PublishRequest(events=list(events)))
        return list(reply.accepted_event_ids)

    def stream(self, request: pb.StreamEventsRequest, timeout: float | None = None) -> Any:
        """A live, cancellable StreamEvents call. A live stream has no natural
        end, so it gets no default deadline: pass `timeout` to bound it."""
        return self.stream_stub.StreamEvents(request, timeout=timeout if timeout is not None else _FOREVER)
