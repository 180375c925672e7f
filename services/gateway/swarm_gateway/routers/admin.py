"""Operator surface: tenants and their API keys, behind the admin token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status
from google.protobuf.field_mask_pb2 import FieldMask

from swarm.quota.v1 import quota_pb2 as qpb
from swarm_gateway.deps import AdminOnly, BackendsDep, KeyCacheDep, Paging, RequestId
from swarm_gateway.enums import PLAN
from swarm_gateway.errors import COMMON_ERRORS
from swarm_gateway.models import NAME_ID_PATTERN, UUID_PATTERN, Plan
from swarm_gateway.quota_models import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPage,
    ApiKeyPublic,
    TenantCreate,
    TenantPage,
    TenantPublic,
    TenantUpdate,
    overrides_to_proto,
)

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminOnly], responses=COMMON_ERRORS)

TenantId = Annotated[str, Path(pattern=NAME_ID_PATTERN)]
KeyId = Annotated[str, Path(pattern=UUID_PATTERN)]


@router.post("/tenants", status_code=status.HTTP_201_CREATED, response_model=TenantPublic)
def create_tenant(body: TenantCreate, b: BackendsDep, request_id: RequestId) -> TenantPublic:
    reply = b.quota.stub.CreateTenant(
        qpb.CreateTenantRequest(
            tenant_id=body.id,
            display_name=body.display_name,
            plan=PLAN.number(body.plan),  # type: ignore[arg-type]
            overrides=overrides_to_proto(body.overrides),
            request_id=request_id,
        )
    )
    return TenantPublic.from_proto(reply.tenant)


@router.get("/tenants", response_model=TenantPage)
def list_tenants(b: BackendsDep, page: Paging, plan: Plan | None = None) -> TenantPage:
    reply = b.quota.stub.ListTenants(
        qpb.ListTenantsRequest(
            plan=PLAN.number(plan),  # type: ignore[arg-type]
            page_size=page.size,
            page_token=page.token,
        )
    )
    return TenantPage(
        items=[TenantPublic.from_proto(t) for t in reply.tenants], next_page_token=reply.next_page_token
    )


@router.get("/tenants/{tenant_id}", response_model=TenantPublic)
def get_tenant(tenant_id: TenantId, b: BackendsDep) -> TenantPublic:
    return TenantPublic.from_proto(b.quota.stub.GetTenant(qpb.GetTenantRequest(tenant_id=tenant_id)).tenant)


@router.patch("/tenants/{tenant_id}", response_model=TenantPublic)
def update_tenant(
    tenant_id: TenantId, body: TenantUpdate, b: BackendsDep, request_id: RequestId
) -> TenantPublic:
    paths = [name for name in ("display_name", "plan", "overrides") if getattr(body, name) is not None]
    if not paths:  # an empty merge patch changes nothing
        return get_tenant(tenant_id, b)
    tenant = qpb.Tenant(
        display_name=body.display_name or "",
        plan=PLAN.number(body.plan),  # type: ignore[arg-type]
        overrides=overrides_to_proto(body.overrides or {}),
    )
    reply = b.quota.stub.UpdateTenant(
        qpb.UpdateTenantRequest(
            tenant_id=tenant_id, tenant=tenant, update_mask=FieldMask(paths=paths), request_id=request_id
        )
    )
    return TenantPublic.from_proto(reply.tenant)


@router.post(
    "/tenants/{tenant_id}/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated
)
def create_api_key(
    tenant_id: TenantId, body: ApiKeyCreate, b: BackendsDep, request_id: RequestId
) -> ApiKeyCreated:
    reply = b.quota.stub.CreateApiKey(
        qpb.CreateApiKeyRequest(tenant_id=tenant_id, display_name=body.display_name, request_id=request_id)
    )
    return ApiKeyCreated(api_key=ApiKeyPublic.from_proto(reply.api_key), secret=reply.secret)


@router.get("/tenants/{tenant_id}/api-keys", response_model=ApiKeyPage)
def list_api_keys(
    tenant_id: TenantId, b: BackendsDep, page: Paging, show_revoked: bool = False
) -> ApiKeyPage:
    reply = b.quota.stub.ListApiKeys(
        qpb.ListApiKeysRequest(
            tenant_id=tenant_id, show_revoked=show_revoked, page_size=page.size, page_token=page.token
        )
    )
    return ApiKeyPage(
        items=[ApiKeyPublic.from_proto(k) for k in reply.api_keys], next_page_token=reply.next_page_token
    )


@router.delete("/tenants/{tenant_id}/api-keys/{key_id}", response_model=ApiKeyPublic)
def revoke_api_key(
    tenant_id: TenantId, key_id: KeyId, b: BackendsDep, cache: KeyCacheDep, request_id: RequestId
) -> ApiKeyPublic:
    reply = b.quota.stub.RevokeApiKey(
        qpb.RevokeApiKeyRequest(tenant_id=tenant_id, api_key_id=key_id, request_id=request_id)
    )
    cache.forget_key(key_id)
    return ApiKeyPublic.from_proto(reply.api_key)
