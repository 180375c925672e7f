"""Small builders shared by the quota tests."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from swarm.quota.v1 import quota_pb2 as pb
from swarm_quota.tables import metadata
from tests.support.harness import QuotaHarness

VMS, TICKETS, CALLS, COST = (
    pb.RESOURCE_VMS,
    pb.RESOURCE_TICKETS_PER_DAY,
    pb.RESOURCE_API_CALLS_PER_HOUR,
    pb.RESOURCE_COST_USD_MONTH,
)


def tenant(q: QuotaHarness, plan: int = pb.PLAN_PRO, **limits: int) -> str:
    """A fresh tenant; keyword arguments are overrides, e.g. `vms=5`."""
    tid = f"t-{uuid.uuid4().hex[:8]}"
    overrides = [
        pb.QuotaOverride(resource=pb.Resource.Value(f"RESOURCE_{k.upper()}"), limit=v)
        for k, v in limits.items()
    ]
    q.stub.CreateTenant(pb.CreateTenantRequest(tenant_id=tid, plan=plan, overrides=overrides))
    return tid


def consume(
    q: QuotaHarness, tid: str, amount: int = 1, resource: int = TICKETS, request_id: str = ""
) -> pb.ConsumeResponse:
    return q.stub.Consume(
        pb.ConsumeRequest(tenant_id=tid, resource=resource, amount=amount, request_id=request_id)
    )


def reserve(q: QuotaHarness, tid: str, request_id: str = "", owner: str = "vmhost") -> pb.ReserveResponse:
    return q.stub.Reserve(
        pb.ReserveRequest(tenant_id=tid, resource=VMS, amount=1, owner=owner, request_id=request_id)
    )


def release(q: QuotaHarness, tid: str, reservation_id: str) -> pb.ReleaseResponse:
    return q.stub.Release(pb.ReleaseRequest(tenant_id=tid, reservation_id=reservation_id))


def usage(q: QuotaHarness, tid: str) -> dict[int, pb.ResourceUsage]:
    return {u.resource: u for u in q.stub.GetUsage(pb.GetUsageRequest(tenant_id=tid)).usages}


def snapshot(q: QuotaHarness) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every quota table, to assert that a call wrote nothing."""
    with q.app.db.engine.connect() as conn:
        return {
            t.name: sorted(tuple(str(v) for v in row) for row in conn.execute(sa.select(t)))
            for t in metadata.sorted_tables
        }
