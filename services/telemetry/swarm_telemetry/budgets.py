"""Budgets kept by the quota service: the tenant's COST_USD_MONTH limit, and
recorded spend charged to it (with overage: the money is already spent).

Errors come back from QuotaClient as SwarmError (NOT_FOUND for an unknown
tenant, UNAVAILABLE when quota is down) and pass through to the caller
unchanged.
"""

from __future__ import annotations

from swarm.quota.v1 import quota_pb2 as qpb
from swarmcommon.clients import QuotaClient
from swarmcommon.tls import ClientTls


class QuotaBudgets:
    def __init__(self, target: str, timeout: float = 10.0, tls: ClientTls | None = None) -> None:
        self._quota = QuotaClient(target, default_timeout=timeout, tls=tls)

    def charge(self, tenant_id: str, cost_usd_micros: int, request_id: str) -> None:
        self._quota.consume(
            tenant_id, qpb.RESOURCE_COST_USD_MONTH, cost_usd_micros, request_id, allow_overage=True
        )

    def limit(self, tenant_id: str) -> int | None:
        return self._quota.limit(tenant_id, qpb.RESOURCE_COST_USD_MONTH)

    def close(self) -> None:
        self._quota.close()
