"""Protobuf <-> domain for the quota service, including input checks."""

from __future__ import annotations

from swarm.quota.v1 import quota_pb2 as pb
from swarm_quota.domain import ApiKey, Plan, Reservation, Resource, Tenant, Usage
from swarmcommon.enums import EnumCodec
from swarmcommon.errors import InvalidArgument
from swarmcommon.protos import timestamp as _ts

PLAN = EnumCodec(pb.Plan, Plan)
RESOURCE = EnumCodec(pb.Resource, Resource)

MutatingRequest = (
    pb.CreateTenantRequest
    | pb.UpdateTenantRequest
    | pb.CreateApiKeyRequest
    | pb.RevokeApiKeyRequest
    | pb.ConsumeRequest
    | pb.ReserveRequest
    | pb.ReleaseRequest
)


def overrides_from_proto(overrides: list[pb.QuotaOverride]) -> dict[Resource, int]:
    result: dict[Resource, int] = {}
    for i, o in enumerate(overrides):
        resource = RESOURCE.required(f"overrides[{i}].resource", o.resource)
        if resource in result:
            raise InvalidArgument(f"overrides[{i}].resource", f"{resource} is overridden twice")
        if o.limit < 0:
            raise InvalidArgument(f"overrides[{i}].limit", "must not be negative")
        result[resource] = o.limit
    return result


def tenant_to_proto(t: Tenant) -> pb.Tenant:
    limits = []
    for r in Resource:
        limit = t.limit(r)
        limits.append(pb.QuotaLimit(resource=RESOURCE.to_proto(r), limit=limit or 0, unlimited=limit is None))  # type: ignore[arg-type]
    return pb.Tenant(
        id=t.id,
        display_name=t.display_name,
        plan=PLAN.to_proto(t.plan),  # type: ignore[arg-type]
        overrides=[pb.QuotaOverride(resource=RESOURCE.to_proto(r), limit=v) for r, v in t.overrides.items()],  # type: ignore[arg-type]
        effective_limits=limits,
        create_time=_ts(t.created_at),
        update_time=_ts(t.updated_at),
    )


def key_to_proto(k: ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        id=k.id,
        tenant_id=k.tenant_id,
        display_name=k.display_name,
        secret_prefix=k.prefix,
        create_time=_ts(k.created_at),
        expire_time=_ts(k.expires_at),
        revoke_time=_ts(k.revoked_at),
        last_use_time=_ts(k.last_used_at),
    )


def usage_to_proto(u: Usage) -> pb.ResourceUsage:
    return pb.ResourceUsage(
        resource=RESOURCE.to_proto(u.resource),  # type: ignore[arg-type]
        used=u.used,
        limit=u.limit or 0,
        unlimited=u.limit is None,
        remaining=u.remaining,
        window_start_time=_ts(u.window_start),
        reset_time=_ts(u.resets_at),
    )


def reservation_to_proto(r: Reservation) -> pb.Reservation:
    return pb.Reservation(
        id=r.id,
        tenant_id=r.tenant_id,
        resource=RESOURCE.to_proto(r.resource),  # type: ignore[arg-type]
        amount=r.amount,
        owner=r.owner,
        create_time=_ts(r.created_at),
        release_time=_ts(r.released_at),
    )
