"""gRPC stubs for the services behind the gateway, one channel each."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from swarm.events.v1 import events_pb2_grpc
from swarm.quota.v1 import quota_pb2_grpc
from swarm.telemetry.v1 import telemetry_pb2_grpc
from swarm.ticketing.v1 import ticketing_pb2_grpc
from swarm.vmhost.v1 import vmhost_pb2_grpc
from swarm_gateway.config import Settings
from swarmcommon.grpcclient import channel, raw_channel


@dataclass
class Backends:
    ticketing: ticketing_pb2_grpc.TicketingServiceStub
    quota: quota_pb2_grpc.QuotaServiceStub
    events: events_pb2_grpc.EventsServiceStub
    # Server-streaming calls go through a channel without the tracing
    # interceptor, so the call stays cancellable (see grpcclient.raw_channel).
    events_stream: events_pb2_grpc.EventsServiceStub
    telemetry: telemetry_pb2_grpc.TelemetryServiceStub
    vmhost: vmhost_pb2_grpc.VmHostServiceStub
    timeout: float
    # Health-checked by /readyz, one per backend.
    channels: dict[str, grpc.Channel]
    extra_channels: list[grpc.Channel]

    @classmethod
    def connect(cls, settings: Settings) -> Backends:
        # Channels connect lazily: a backend that is down only fails the
        # routes that need it (503), never the gateway's start-up.
        chans = {
            "ticketing": channel(settings.ticketing_target),
            "quota": channel(settings.quota_target),
            "events": channel(settings.events_target),
            "telemetry": channel(settings.telemetry_target),
            "vmhost": channel(settings.vmhost_target),
        }
        streams = raw_channel(settings.events_target)
        return cls(
            ticketing_pb2_grpc.TicketingServiceStub(chans["ticketing"]),
            quota_pb2_grpc.QuotaServiceStub(chans["quota"]),
            events_pb2_grpc.EventsServiceStub(chans["events"]),
            events_pb2_grpc.EventsServiceStub(streams),
            telemetry_pb2_grpc.TelemetryServiceStub(chans["telemetry"]),
            vmhost_pb2_grpc.VmHostServiceStub(chans["vmhost"]),
            settings.backend_timeout_seconds,
            chans,
            [streams],
        )

    def close(self) -> None:
        for ch in [*self.channels.values(), *self.extra_channels]:
            ch.close()
