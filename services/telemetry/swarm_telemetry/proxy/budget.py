"""The tenant's monthly cost budget, held and settled in quota
(COST_USD_MONTH): Reserve the estimate before the call, Release with
`consume_amount` = the actual cost after it (one transaction in quota: the
estimate goes back and the actual cost is charged, past the limit if need
be, since the money is spent).

Errors come back from QuotaClient as SwarmError: QuotaExceeded when the
estimate does not fit, NotFound for a tenant quota does not know,
Unavailable when quota cannot be reached.
"""

from __future__ import annotations

from swarm.quota.v1 import quota_pb2 as qpb
from swarmcommon.clients import QuotaClient
from swarmcommon.tls import ClientTls

OWNER = "telemetry/llm-proxy"


class CostHolds:
    def __init__(self, target: str, timeout: float = 10.0, tls: ClientTls | None = None) -> None:
        self._quota = QuotaClient(target, default_timeout=timeout, tls=tls)

    def reserve(self, tenant_id: str, amount: int, call_id: str) -> str:
        """Hold `amount` micro-dollars of this month's budget; the reservation id."""
        reply = self._quota.stub.Reserve(
            qpb.ReserveRequest(
                tenant_id=tenant_id,
                resource=qpb.RESOURCE_COST_USD_MONTH,
                amount=amount,
                owner=f"{OWNER}/{call_id}",
                request_id=f"llm-hold:{call_id}",
            )
        )
        return str(reply.reservation.id)

    def settle(self, tenant_id: str, reservation_id: str, actual: int, call_id: str) -> None:
        """Give the hold back and charge `actual`; a repeat charges nothing."""
        self._quota.stub.Release(
            qpb.ReleaseRequest(
                tenant_id=tenant_id,
                reservation_id=reservation_id,
                consume_amount=actual,
                request_id=f"llm-settle:{call_id}",
            )
        )

    def close(self) -> None:
        self._quota.close()
