"""Budgets through the quota service: the tenant's COST_USD_MONTH limit, and
recorded spend charged to it (with overage: the money is already spent)."""

from __future__ import annotations

import grpc

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.quota.v1 import quota_pb2_grpc as qpb_grpc
from swarmcommon.grpcclient import channel, error_from_rpc


class GrpcBudgets:
    def __init__(self, target: str, timeout: float = 10.0) -> None:
        self._channel = channel(target)
        self._stub = qpb_grpc.QuotaServiceStub(self._channel)
        self._timeout = timeout

    def charge(self, tenant_id: str, cost_usd_micros: int, request_id: str) -> None:
        try:
            self._stub.Consume(
                qpb.ConsumeRequest(
                    tenant_id=tenant_id,
                    resource=qpb.RESOURCE_COST_USD_MONTH,
                    amount=cost_usd_micros,
                    allow_overage=True,
                    request_id=request_id,
                ),
                timeout=self._timeout,
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def limit(self, tenant_id: str) -> int | None:
        try:
            reply = self._stub.GetUsage(qpb.GetUsageRequest(tenant_id=tenant_id), timeout=self._timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        for usage in reply.usages:
            if usage.resource == qpb.RESOURCE_COST_USD_MONTH:
                return None if usage.unlimited else int(usage.limit)
        return None

    def close(self) -> None:
        self._channel.close()
