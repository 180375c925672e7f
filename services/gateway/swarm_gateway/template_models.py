"""REST resources for agent templates, their versions and deployments."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from swarm.ticketing.v1 import templates_pb2 as tmpb
from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm_gateway.models import Request, Role, Text, ts

DeploymentStatus = Literal["canary", "rolling", "full", "rollback", "disabled"]
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$"
Slug = Annotated[str, Field(pattern=SLUG_PATTERN, description="3-64 lowercase letters, digits and dashes")]
Percent = Annotated[int, Field(ge=1, le=100)]


class TemplateCreate(Request):
    slug: Slug
    agent_type: Role
    name: Text = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=4000)


class VersionCreate(Request):
    prompt: Text = Field(min_length=1, max_length=64 * 1024, description="The stage's system prompt")
    model: Text = Field(default="", max_length=128, description="Empty: the agent's configured model")
    parameters: dict[str, Any] = Field(default_factory=dict, description="e.g. max_tokens, temperature")
    tools: dict[str, Any] = Field(default_factory=dict, description="Tool settings")


class DeploymentCreate(Request):
    slug: Slug
    version: int = Field(ge=1, le=1_000_000)
    rollout_percent: Percent = Field(description="Share of tickets on the new version; 100: all at once")
    ladder: list[Percent] = Field(
        default_factory=list, max_length=20, description="Rising steps ending at 100; empty: 5, 25, 50, 100"
    )


class PromoteRequest(Request):
    rollout_percent: int = Field(default=0, ge=0, le=100, description="0: the ladder's next step")


class RollbackRequest(Request):
    reason: Text = Field(default="", max_length=1000)


class TemplatePublic(BaseModel):
    id: str
    slug: str
    agent_type: str
    owner: Literal["platform", "tenant"]
    name: str
    description: str
    created_at: datetime | None

    @classmethod
    def from_proto(cls, t: tmpb.AgentTemplate) -> TemplatePublic:
        return cls(
            id=t.id,
            slug=t.slug,
            agent_type=t.agent_type,
            owner="platform" if not t.owner_tenant_id else "tenant",
            name=t.name,
            description=t.description,
            created_at=ts(t.create_time, t.HasField("create_time")),
        )


class VersionPublic(BaseModel):
    id: str
    version: int
    prompt: str
    model: str
    parameters: dict[str, Any]
    tools: dict[str, Any]

    @classmethod
    def from_proto(cls, v: tpb.AgentTemplateVersion) -> VersionPublic:
        return cls(
            id=v.version_id,
            version=v.version,
            prompt=v.prompt,
            model=v.model,
            parameters=json.loads(v.parameters_json or "{}"),
            tools=json.loads(v.tools_json or "{}"),
        )


class TemplateDetail(BaseModel):
    template: TemplatePublic
    versions: list[VersionPublic]


class DeploymentPublic(BaseModel):
    id: str
    scope: Literal["all_tenants", "tenant"]
    agent_type: str
    version_id: str
    stable_version_id: str | None
    rollout_percent: int
    status: DeploymentStatus
    ladder: list[int]
    success_count: int
    failure_count: int
    failure_rate: float
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_proto(cls, d: tmpb.TemplateDeployment) -> DeploymentPublic:
        return cls(
            id=d.id,
            scope="all_tenants" if not d.tenant_id else "tenant",
            agent_type=d.agent_type,
            version_id=d.version_id,
            stable_version_id=d.stable_version_id or None,
            rollout_percent=d.rollout_percent,
            status=d.status,  # type: ignore[arg-type]
            ladder=list(d.ladder),
            success_count=d.success_count,
            failure_count=d.failure_count,
            failure_rate=d.failure_rate,
            created_at=ts(d.create_time, d.HasField("create_time")),
            updated_at=ts(d.update_time, d.HasField("update_time")),
        )
