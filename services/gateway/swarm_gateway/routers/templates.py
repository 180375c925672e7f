"""Agent templates, their versions and deployments (canary rollouts),
backed by ticketing's AgentTemplateService. The tenant comes from the API
key: a tenant authors its own templates, deploys its own or the platform's,
and sees nothing of another tenant's (404)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, status

from swarm.ticketing.v1 import templates_pb2 as tmpb
from swarm_gateway.deps import BackendsDep, CurrentCaller, RequestId
from swarm_gateway.errors import COMMON_ERRORS
from swarm_gateway.models import UUID_PATTERN
from swarm_gateway.template_models import (
    SLUG_PATTERN,
    DeploymentCreate,
    DeploymentPublic,
    PromoteRequest,
    RollbackRequest,
    TemplateCreate,
    TemplateDetail,
    TemplatePublic,
    VersionCreate,
    VersionPublic,
)

router = APIRouter(prefix="/api", tags=["templates"], responses=COMMON_ERRORS)

SlugPath = Annotated[str, Path(pattern=SLUG_PATTERN)]
DeploymentId = Annotated[str, Path(pattern=UUID_PATTERN)]


@router.post("/templates", status_code=status.HTTP_201_CREATED, response_model=TemplatePublic)
def create_template(
    body: TemplateCreate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> TemplatePublic:
    reply = b.ticketing.templates.CreateTemplate(
        tmpb.CreateTemplateRequest(
            tenant_id=caller.tenant_id,
            slug=body.slug,
            agent_type=body.agent_type,
            name=body.name,
            description=body.description,
            request_id=request_id,
        )
    )
    return TemplatePublic.from_proto(reply.template)


@router.get("/templates/{slug}", response_model=TemplateDetail)
def get_template(slug: SlugPath, caller: CurrentCaller, b: BackendsDep) -> TemplateDetail:
    reply = b.ticketing.templates.GetTemplate(tmpb.GetTemplateRequest(tenant_id=caller.tenant_id, slug=slug))
    return TemplateDetail(
        template=TemplatePublic.from_proto(reply.template),
        versions=[VersionPublic.from_proto(v) for v in reply.versions],
    )


@router.post("/templates/{slug}/versions", status_code=status.HTTP_201_CREATED, response_model=VersionPublic)
def add_version(
    slug: SlugPath, body: VersionCreate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> VersionPublic:
    reply = b.ticketing.templates.AddTemplateVersion(
        tmpb.AddTemplateVersionRequest(
            tenant_id=caller.tenant_id,
            slug=slug,
            prompt=body.prompt,
            model=body.model,
            parameters_json=json.dumps(body.parameters),
            tools_json=json.dumps(body.tools),
            request_id=request_id,
        )
    )
    return VersionPublic.from_proto(reply.version)


@router.post("/deployments", status_code=status.HTTP_201_CREATED, response_model=DeploymentPublic)
def create_deployment(
    body: DeploymentCreate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> DeploymentPublic:
    reply = b.ticketing.templates.CreateDeployment(
        tmpb.CreateDeploymentRequest(
            tenant_id=caller.tenant_id,
            slug=body.slug,
            version=body.version,
            rollout_percent=body.rollout_percent,
            ladder=body.ladder,
            request_id=request_id,
        )
    )
    return DeploymentPublic.from_proto(reply.deployment)


@router.get("/deployments/{deployment_id}", response_model=DeploymentPublic)
def get_deployment(deployment_id: DeploymentId, caller: CurrentCaller, b: BackendsDep) -> DeploymentPublic:
    reply = b.ticketing.templates.GetDeployment(
        tmpb.GetDeploymentRequest(tenant_id=caller.tenant_id, deployment_id=deployment_id)
    )
    return DeploymentPublic.from_proto(reply.deployment)


@router.post("/deployments/{deployment_id}/promote", response_model=DeploymentPublic)
def promote(
    deployment_id: DeploymentId,
    body: PromoteRequest,
    caller: CurrentCaller,
    b: BackendsDep,
    request_id: RequestId,
) -> DeploymentPublic:
    reply = b.ticketing.templates.PromoteDeployment(
        tmpb.PromoteDeploymentRequest(
            tenant_id=caller.tenant_id,
            deployment_id=deployment_id,
            rollout_percent=body.rollout_percent,
            request_id=request_id,
        )
    )
    return DeploymentPublic.from_proto(reply.deployment)


@router.post("/deployments/{deployment_id}/rollback", response_model=DeploymentPublic)
def rollback(
    deployment_id: DeploymentId,
    body: RollbackRequest,
    caller: CurrentCaller,
    b: BackendsDep,
    request_id: RequestId,
) -> DeploymentPublic:
    reply = b.ticketing.templates.RollbackDeployment(
        tmpb.RollbackDeploymentRequest(
            tenant_id=caller.tenant_id, deployment_id=deployment_id, reason=body.reason, request_id=request_id
        )
    )
    return DeploymentPublic.from_proto(reply.deployment)


@router.post("/deployments/{deployment_id}/pause", response_model=DeploymentPublic)
def pause(
    deployment_id: DeploymentId, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> DeploymentPublic:
    reply = b.ticketing.templates.PauseDeployment(
        tmpb.PauseDeploymentRequest(
            tenant_id=caller.tenant_id, deployment_id=deployment_id, request_id=request_id
        )
    )
    return DeploymentPublic.from_proto(reply.deployment)
