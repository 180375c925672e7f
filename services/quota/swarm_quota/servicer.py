"""gRPC adapter only: proto in -> domain call -> proto out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

import grpc

from swarm.quota.v1 import quota_pb2 as pb
from swarm.quota.v1 import quota_pb2_grpc as pb_grpc
from swarm_quota import wire
from swarm_quota.domain import Plan, Resource
from swarm_quota.stores.api_keys import ApiKeys
from swarm_quota.stores.counters import Counters
from swarm_quota.stores.reservations import Reservations
from swarm_quota.stores.tenants import TenantStore
from swarmcommon import validation as v
from swarmcommon.authz import Access, Caller, CallerKind, allow, current_caller
from swarmcommon.errors import InvalidArgument, PermissionDenied
from swarmcommon.idempotency import request_key
from swarmcommon.pagination import page_size

MAX_SECRET = 256


# Who may call what (swarmcommon.authz). Tenant and key administration is the
# gateway's (its admin routes) and operators'; VM reservations are vmhost's.
# Cost reservations (held while an LLM call runs, settled by Release with
# consume_amount) are telemetry's LLM proxy's.
ADMIN = allow("gateway", operators=True)
ACCESS: Access = {
    "CreateTenant": ADMIN,
    # Telemetry's LLM proxy reads the tenant's default ticket cost cap.
    "GetTenant": allow("gateway", "telemetry", operators=True),
    "ListTenants": ADMIN,
    "UpdateTenant": ADMIN,
    "CreateApiKey": ADMIN,
    "ListApiKeys": ADMIN,
    "RevokeApiKey": ADMIN,
    "Authenticate": allow("gateway"),
    "Consume": allow("ticketing", "gateway", "telemetry"),
    "Reserve": allow("vmhost", "telemetry"),
    "Release": allow("vmhost", "telemetry"),
    "ListReservations": allow("vmhost", "gateway", operators=True),
    "GetUsage": allow("gateway", "telemetry", "vmhost", "ticketing", operators=True),
}


# Which resources each service holds reservations of: vmhost its VMs, the
# LLM proxy in telemetry estimated spend. Neither can touch the other's.
RESERVATION_OWNERS: dict[str, frozenset[Resource]] = {
    "vmhost": frozenset({Resource.VMS}),
    "telemetry": frozenset({Resource.COST_USD_MONTH}),
}


def _reservable(caller: Caller) -> frozenset[Resource] | None:
    """What `caller` may reserve and release; None: anything (operators, dev mode)."""
    if caller.kind is CallerKind.SERVICE:
        return RESERVATION_OWNERS.get(caller.name, frozenset())
    return None


@dataclass(frozen=True)
class Stores:
    tenants: TenantStore
    keys: ApiKeys
    counters: Counters
    reservations: Reservations


class QuotaServicer(pb_grpc.QuotaServiceServicer):  # type: ignore[misc]
    def __init__(self, stores: Stores) -> None:
        self.s = stores

    # -- tenants ----------------------------------------------------------------------

    def CreateTenant(
        self, request: pb.CreateTenantRequest, context: grpc.ServicerContext
    ) -> pb.CreateTenantResponse:
        tenant_id = v.name_id("tenant_id", request.tenant_id) if request.tenant_id else None
        tenant = self.s.tenants.create_tenant(
            tenant_id,
            v.bounded_text("display_name", request.display_name, 200),
            wire.PLAN.from_proto("plan", request.plan) or Plan.FREE,
            wire.overrides_from_proto(list(request.overrides)),
            request_key(tenant_id or "", request),
        )
        return pb.CreateTenantResponse(tenant=wire.tenant_to_proto(tenant))

    def GetTenant(self, request: pb.GetTenantRequest, context: grpc.ServicerContext) -> pb.GetTenantResponse:
        tenant = self.s.tenants.get_tenant(v.name_id("tenant_id", request.tenant_id))
        return pb.GetTenantResponse(tenant=wire.tenant_to_proto(tenant))

    def ListTenants(
        self, request: pb.ListTenantsRequest, context: grpc.ServicerContext
    ) -> pb.ListTenantsResponse:
        page = self.s.tenants.list_tenants(
            wire.PLAN.from_proto("plan", request.plan), page_size(request.page_size), request.page_token
        )
        return pb.ListTenantsResponse(
            tenants=[wire.tenant_to_proto(t) for t in page.items], next_page_token=page.next_page_token
        )

    def UpdateTenant(
        self, request: pb.UpdateTenantRequest, context: grpc.ServicerContext
    ) -> pb.UpdateTenantResponse:
        tenant_id = v.name_id("tenant_id", request.tenant_id)
        if request.tenant.id and request.tenant.id != tenant_id:
            raise InvalidArgument("tenant.id", "must be empty or equal tenant_id")
        tenant = self.s.tenants.update_tenant(
            tenant_id,
            list(request.update_mask.paths),
            v.bounded_text("tenant.display_name", request.tenant.display_name, 200),
            wire.PLAN.from_proto("tenant.plan", request.tenant.plan),
            wire.overrides_from_proto(list(request.tenant.overrides)),
            request_key(tenant_id, request),
        )
        return pb.UpdateTenantResponse(tenant=wire.tenant_to_proto(tenant))

    # -- API keys ---------------------------------------------------------------------

    def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        tenant_id = v.name_id("tenant_id", request.tenant_id)
        expires = request.expire_time.ToDatetime(tzinfo=UTC) if request.HasField("expire_time") else None
        key, secret = self.s.keys.create(
            tenant_id,
            v.bounded_text("display_name", request.display_name, 200),
            expires,
            request_key(tenant_id, request),
        )
        return pb.CreateApiKeyResponse(api_key=wire.key_to_proto(key), secret=secret)

    def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: grpc.ServicerContext
    ) -> pb.ListApiKeysResponse:
        page = self.s.keys.page(
            v.name_id("tenant_id", request.tenant_id),
            request.show_revoked,
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListApiKeysResponse(
            api_keys=[wire.key_to_proto(k) for k in page.items], next_page_token=page.next_page_token
        )

    def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: grpc.ServicerContext
    ) -> pb.RevokeApiKeyResponse:
        tenant_id = v.name_id("tenant_id", request.tenant_id)
        key = self.s.keys.revoke(
            tenant_id, v.uuid_id("api_key_id", request.api_key_id), request_key(tenant_id, request)
        )
        return pb.RevokeApiKeyResponse(api_key=wire.key_to_proto(key))

    def Authenticate(
        self, request: pb.AuthenticateRequest, context: grpc.ServicerContext
    ) -> pb.AuthenticateResponse:
        tenant, key = self.s.keys.authenticate(request.secret[:MAX_SECRET])
        return pb.AuthenticateResponse(tenant=wire.tenant_to_proto(tenant), api_key_id=key.id)

    # -- quotas -------------------------------------------------------------------------

    def Consume(self, request: pb.ConsumeRequest, context: grpc.ServicerContext) -> pb.ConsumeResponse:
        tenant_id = v.name_id("tenant_id", request.tenant_id)
        usage = self.s.counters.consume(
            tenant_id,
            wire.RESOURCE.required("resource", request.resource),
            request.amount,
            request.allow_overage,
            request_key(tenant_id, request),
        )
        return pb.ConsumeResponse(usage=wire.usage_to_proto(usage))

    def Reserve(self, request: pb.ReserveRequest, context: grpc.ServicerContext) -> pb.ReserveResponse:
        tenant_id = v.name_id("tenant_id", request.tenant_id)
        resource = wire.RESOURCE.required("resource", request.resource)
        allowed = _reservable(current_caller())
        if allowed is not None and resource not in allowed:
            raise PermissionDenied(
                f"{current_caller()} may not reserve {resource}", reason="RESOURCE_NOT_ALLOWED"
            )
        reservation, usage = self.s.reservations.reserve(
            tenant_id,
            resource,
            request.amount,
            v.required_text("owner", request.owner, 200),
            request_key(tenant_id, request),
        )
        return pb.ReserveResponse(
            reservation=wire.reservation_to_proto(reservation), usage=wire.usage_to_proto(usage)
        )

    def Release(self, request: pb.ReleaseRequest, context: grpc.ServicerContext) -> pb.ReleaseResponse:
        tenant_id = v.name_id("tenant_id", request.tenant_id)
        reservation, outcome, usage = self.s.reservations.release(
            tenant_id,
            v.uuid_id("reservation_id", request.reservation_id),
            request.consume_amount,
            request_key(tenant_id, request),
            _reservable(current_caller()),
        )
        return pb.ReleaseResponse(
            reservation=wire.reservation_to_proto(reservation),
            released=outcome.released,
            usage=wire.usage_to_proto(usage),
            consumed_amount=outcome.consumed,
        )

    def ListReservations(
        self, request: pb.ListReservationsRequest, context: grpc.ServicerContext
    ) -> pb.ListReservationsResponse:
        page = self.s.reservations.page(
            v.name_id("tenant_id", request.tenant_id),
            wire.RESOURCE.from_proto("resource", request.resource),
            v.bounded_text("owner", request.owner, 200) or None,
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListReservationsResponse(
            reservations=[wire.reservation_to_proto(r) for r in page.items],
            next_page_token=page.next_page_token,
        )

    def GetUsage(self, request: pb.GetUsageRequest, context: grpc.ServicerContext) -> pb.GetUsageResponse:
        tenant, usages = self.s.counters.usage(v.name_id("tenant_id", request.tenant_id))
        return pb.GetUsageResponse(
            plan=wire.PLAN.to_proto(tenant.plan),  # type: ignore[arg-type]
            usages=[wire.usage_to_proto(u) for u in usages],
        )
