"""gRPC stubs for the services behind the gateway, one channel each."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from swarm.quota.v1 import quota_pb2_grpc
from swarm.ticketing.v1 import ticketing_pb2_grpc
from swarmcommon.grpcclient import channel


@dataclass
class Backends:
    ticketing: ticketing_pb2_grpc.TicketingServiceStub
    quota: quota_pb2_grpc.QuotaServiceStub
    timeout: float
    channels: dict[str, grpc.Channel]

    @classmethod
    def connect(cls, ticketing_target: str, quota_target: str, timeout: float) -> Backends:
        t, q = channel(ticketing_target), channel(quota_target)
        return cls(
            ticketing_pb2_grpc.TicketingServiceStub(t),
            quota_pb2_grpc.QuotaServiceStub(q),
            timeout,
            {"ticketing": t, "quota": q},
        )

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()
