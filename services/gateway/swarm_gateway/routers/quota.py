"""The caller's own quota usage (the dashboard's "Resource Usage" panel)."""

from __future__ import annotations

from fastapi import APIRouter

from swarm.quota.v1 import quota_pb2 as qpb
from swarm_gateway.deps import BackendsDep, CurrentCaller
from swarm_gateway.enums import PLAN
from swarm_gateway.errors import COMMON_ERRORS
from swarm_gateway.quota_models import ResourceUsagePublic, UsagePublic

router = APIRouter(prefix="/api", tags=["quota"], responses=COMMON_ERRORS)


@router.get("/quota/usage", response_model=UsagePublic)
def get_usage(caller: CurrentCaller, b: BackendsDep) -> UsagePublic:
    reply = b.quota.stub.GetUsage(qpb.GetUsageRequest(tenant_id=caller.tenant_id))
    return UsagePublic(
        plan=PLAN.name(reply.plan),  # type: ignore[arg-type]
        resources=[ResourceUsagePublic.from_proto(u) for u in reply.usages],
    )
