"""Ticket quota: creating a project charges `tickets_per_day` for all of its
tickets at once, through the quota service, before anything is written."""

from __future__ import annotations

from typing import Protocol

import grpc

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.quota.v1 import quota_pb2_grpc as qpb_grpc
from swarmcommon.grpcclient import channel, error_from_rpc


class TicketQuota(Protocol):
    def charge_tickets(self, tenant_id: str, count: int, request_id: str) -> None:
        """Charge `count` tickets or raise QuotaExceeded (nothing charged)."""


class GrpcTicketQuota:
    def __init__(self, target: str, timeout: float = 10.0) -> None:
        self._channel = channel(target)
        self._stub = qpb_grpc.QuotaServiceStub(self._channel)
        self._timeout = timeout

    def charge_tickets(self, tenant_id: str, count: int, request_id: str) -> None:
        try:
            self._stub.Consume(
                qpb.ConsumeRequest(
                    tenant_id=tenant_id,
                    resource=qpb.RESOURCE_TICKETS_PER_DAY,
                    amount=count,
                    request_id=request_id,
                ),
                timeout=self._timeout,
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def close(self) -> None:
        self._channel.close()
