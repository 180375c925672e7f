"""gRPC adapter for agent templates (AgentTemplateService): proto in -> store
call -> proto out. The platform's scope (tenant_id "") is an operator's."""

from __future__ import annotations

import json
from typing import Any

import grpc

from swarm.ticketing.v1 import templates_pb2 as tpb
from swarm.ticketing.v1 import templates_pb2_grpc as tpb_grpc
from swarm_ticketing import wire
from swarm_ticketing.stores.deployments import Deployments
from swarm_ticketing.stores.templates import TemplateStore
from swarm_ticketing.templates import PLATFORM, Deployment, Template
from swarmcommon import validation as v
from swarmcommon.authz import Access, CallerKind, allow, current_caller
from swarmcommon.errors import InvalidArgument, PermissionDenied
from swarmcommon.idempotency import request_key
from swarmcommon.protos import timestamp

SERVICE_NAME = "swarm.ticketing.v1.AgentTemplateService"
_MANAGE = allow("gateway", operators=True)
ACCESS: Access = {
    name: _MANAGE
    for name in (
        "CreateTemplate",
        "AddTemplateVersion",
        "GetTemplate",
        "CreateDeployment",
        "GetDeployment",
        "PromoteDeployment",
        "RollbackDeployment",
        "PauseDeployment",
    )
}


def _scope(tenant_id: str) -> str:
    """The tenant acted for; "" (the platform's) only for an operator."""
    caller = current_caller()
    if tenant_id == PLATFORM:
        if caller.kind not in (CallerKind.OPERATOR, CallerKind.INSECURE_DEV):
            raise PermissionDenied("only an operator acts for every tenant (tenant_id '')", field="tenant_id")
        return PLATFORM
    return v.name_id("tenant_id", tenant_id)


def parse_json_object(field: str, raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise InvalidArgument(field, f"not JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(field, "must be a JSON object")
    return value


def template_to_proto(t: Template) -> tpb.AgentTemplate:
    return tpb.AgentTemplate(
        id=t.id,
        slug=t.slug,
        agent_type=t.agent_type,
        owner_tenant_id=t.owner_tenant_id,
        name=t.name,
        description=t.description,
        create_time=timestamp(t.created_at),
    )


def deployment_to_proto(d: Deployment) -> tpb.TemplateDeployment:
    return tpb.TemplateDeployment(
        id=d.id,
        tenant_id=d.tenant_id,
        agent_type=d.agent_type,
        version_id=d.version_id,
        stable_version_id=d.stable_version_id or "",
        rollout_percent=d.rollout_percent,
        status=d.status.value,
        ladder=list(d.ladder),
        success_count=d.success_count,
        failure_count=d.failure_count,
        failure_rate=round(d.failure_rate, 4),
        created_by=d.created_by,
        create_time=timestamp(d.created_at),
        update_time=timestamp(d.updated_at),
    )


class AgentTemplateServicer(tpb_grpc.AgentTemplateServiceServicer):  # type: ignore[misc]
    def __init__(self, templates: TemplateStore, deployments: Deployments) -> None:
        self.templates = templates
        self.deployments = deployments

    def CreateTemplate(
        self, request: tpb.CreateTemplateRequest, context: grpc.ServicerContext
    ) -> tpb.CreateTemplateResponse:
        scope = _scope(request.tenant_id)
        template = self.templates.create_template(
            scope,
            request.slug,
            request.agent_type,
            v.required_text("name", request.name, 200),
            v.bounded_text("description", request.description, 4000),
            request_key(scope, request),
        )
        return tpb.CreateTemplateResponse(template=template_to_proto(template))

    def AddTemplateVersion(
        self, request: tpb.AddTemplateVersionRequest, context: grpc.ServicerContext
    ) -> tpb.AddTemplateVersionResponse:
        scope = _scope(request.tenant_id)
        version = self.templates.add_version(
            scope,
            request.slug,
            request.prompt,
            request.model,
            parse_json_object("parameters_json", request.parameters_json),
            parse_json_object("tools_json", request.tools_json),
            str(current_caller()),
            request_key(scope, request),
        )
        return tpb.AddTemplateVersionResponse(version=wire.version_to_proto(version))

    def GetTemplate(
        self, request: tpb.GetTemplateRequest, context: grpc.ServicerContext
    ) -> tpb.GetTemplateResponse:
        template, versions = self.templates.template(_scope(request.tenant_id), request.slug)
        return tpb.GetTemplateResponse(
            template=template_to_proto(template),
            versions=[wire.version_to_proto(x) for x in versions],
        )

    def CreateDeployment(
        self, request: tpb.CreateDeploymentRequest, context: grpc.ServicerContext
    ) -> tpb.CreateDeploymentResponse:
        scope = _scope(request.tenant_id)
        deployment = self.deployments.deploy(
            scope,
            str(current_caller()),
            request.slug,
            request.version,
            request.rollout_percent,
            list(request.ladder) or None,
            request_key(scope, request),
        )
        return tpb.CreateDeploymentResponse(deployment=deployment_to_proto(deployment))

    def GetDeployment(
        self, request: tpb.GetDeploymentRequest, context: grpc.ServicerContext
    ) -> tpb.GetDeploymentResponse:
        deployment = self.deployments.deployment(_scope(request.tenant_id), request.deployment_id)
        return tpb.GetDeploymentResponse(deployment=deployment_to_proto(deployment))

    def PromoteDeployment(
        self, request: tpb.PromoteDeploymentRequest, context: grpc.ServicerContext
    ) -> tpb.PromoteDeploymentResponse:
        scope = _scope(request.tenant_id)
        deployment = self.deployments.promote(
            scope,
            request.deployment_id,
            str(current_caller()),
            request.rollout_percent,
            request_key(scope, request),
        )
        return tpb.PromoteDeploymentResponse(deployment=deployment_to_proto(deployment))

    def RollbackDeployment(
        self, request: tpb.RollbackDeploymentRequest, context: grpc.ServicerContext
    ) -> tpb.RollbackDeploymentResponse:
        scope = _scope(request.tenant_id)
        deployment = self.deployments.rollback(
            scope,
            request.deployment_id,
            str(current_caller()),
            v.bounded_text("reason", request.reason, 1000),
            request_key(scope, request),
        )
        return tpb.RollbackDeploymentResponse(deployment=deployment_to_proto(deployment))

    def PauseDeployment(
        self, request: tpb.PauseDeploymentRequest, context: grpc.ServicerContext
    ) -> tpb.PauseDeploymentResponse:
        scope = _scope(request.tenant_id)
        deployment = self.deployments.pause(
            scope, request.deployment_id, str(current_caller()), request_key(scope, request)
        )
        return tpb.PauseDeploymentResponse(deployment=deployment_to_proto(deployment))
