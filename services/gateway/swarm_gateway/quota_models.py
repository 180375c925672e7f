"""The quota resources: usage, tenants and API keys, and their mapping from
the quota service's protobuf messages."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from swarm.quota.v1 import quota_pb2 as qpb
from swarm_gateway.enums import PLAN, RESOURCE
from swarm_gateway.models import NAME_ID_PATTERN, Limit, Plan, Request, Resource, Text, ts


class ResourceUsagePublic(BaseModel):
    resource: Resource
    used: int
    limit: int | None = Field(description="null when unlimited")
    remaining: int | None
    window_start: datetime | None
    resets_at: datetime | None

    @classmethod
    def from_proto(cls, u: qpb.ResourceUsage) -> ResourceUsagePublic:
        return cls(
            resource=RESOURCE.name(u.resource),  # type: ignore[arg-type]
            used=u.used,
            limit=None if u.unlimited else u.limit,
            remaining=None if u.unlimited else u.remaining,
            window_start=ts(u.window_start_time, u.HasField("window_start_time")),
            resets_at=ts(u.reset_time, u.HasField("reset_time")),
        )


class UsagePublic(BaseModel):
    plan: Plan
    resources: list[ResourceUsagePublic]


class TenantCreate(Request):
    id: Text = Field(default="", pattern=r"^$|" + NAME_ID_PATTERN, description="Optional; chosen if empty")
    display_name: Text = Field(default="", max_length=200)
    plan: Plan = "free"
    overrides: dict[Resource, Limit] = Field(
        default_factory=dict, description="Per-resource limits over the plan"
    )


class TenantUpdate(Request):
    display_name: Text | None = Field(default=None, max_length=200)
    plan: Plan | None = None
    overrides: dict[Resource, Limit] | None = None


class TenantPublic(BaseModel):
    id: str
    display_name: str
    plan: Plan
    overrides: dict[Resource, int]
    limits: dict[Resource, int | None]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_proto(cls, t: qpb.Tenant) -> TenantPublic:
        return cls(
            id=t.id,
            display_name=t.display_name,
            plan=PLAN.name(t.plan),  # type: ignore[arg-type]
            overrides={
                RESOURCE.name(o.resource): o.limit  # type: ignore[misc]
                for o in t.overrides
            },
            limits={
                RESOURCE.name(q.resource): (None if q.unlimited else q.limit)  # type: ignore[misc]
                for q in t.effective_limits
            },
            created_at=t.create_time.ToDatetime(tzinfo=UTC),
            updated_at=t.update_time.ToDatetime(tzinfo=UTC),
        )


class TenantPage(BaseModel):
    items: list[TenantPublic]
    next_page_token: str


class ApiKeyCreate(Request):
    display_name: Text = Field(default="", max_length=200)


class ApiKeyPublic(BaseModel):
    id: str
    display_name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_proto(cls, k: qpb.ApiKey) -> ApiKeyPublic:
        return cls(
            id=k.id,
            display_name=k.display_name,
            prefix=k.secret_prefix,
            created_at=k.create_time.ToDatetime(tzinfo=UTC),
            revoked_at=ts(k.revoke_time, k.HasField("revoke_time")),
            last_used_at=ts(k.last_use_time, k.HasField("last_use_time")),
        )


class ApiKeyCreated(BaseModel):
    api_key: ApiKeyPublic
    secret: str = Field(description="Shown once; only a hash is stored")


class ApiKeyPage(BaseModel):
    items: list[ApiKeyPublic]
    next_page_token: str


def overrides_to_proto(overrides: Mapping[Resource, int]) -> list[qpb.QuotaOverride]:
    return [
        qpb.QuotaOverride(resource=RESOURCE.number(r), limit=v)  # type: ignore[arg-type]
        for r, v in overrides.items()
    ]
