"""gRPC adapter only: proto in -> domain call -> proto out."""

from __future__ import annotations

from datetime import UTC

import grpc

from swarm.quota.v1 import quota_pb2 as pb
from swarm.quota.v1 import quota_pb2_grpc as pb_grpc
from swarm_quota import wire
from swarm_quota.counters import Counters
from swarm_quota.domain import Plan
from swarm_quota.store import TenantStore
from swarmcommon import validation as v
from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import page_size

MAX_SECRET = 256


class QuotaServicer(pb_grpc.QuotaServiceServicer):  # type: ignore[misc]
    def __init__(self, tenants: TenantStore, counters: Counters) -> None:
        self.tenants = tenants
        self.counters = counters

    # -- tenants ----------------------------------------------------------------------

    def CreateTenant(
        self, request: pb.CreateTenantRequest, context: grpc.ServicerContext
    ) -> pb.CreateTenantResponse:
        tenant = self.tenants.create_tenant(
            v.name_id("tenant_id", request.tenant_id) if request.tenant_id else None,
            v.bounded_text("display_name", request.display_name, 200),
            wire.plan_from_proto("plan", request.plan) or Plan.FREE,
            wire.overrides_from_proto(list(request.overrides)),
            v.optional_request_id(request.request_id),
        )
        return pb.CreateTenantResponse(tenant=wire.tenant_to_proto(tenant))

    def GetTenant(self, request: pb.GetTenantRequest, context: grpc.ServicerContext) -> pb.GetTenantResponse:
        tenant = self.tenants.get_tenant(v.name_id("tenant_id", request.tenant_id))
        return pb.GetTenantResponse(tenant=wire.tenant_to_proto(tenant))

    def ListTenants(
        self, request: pb.ListTenantsRequest, context: grpc.ServicerContext
    ) -> pb.ListTenantsResponse:
        page = self.tenants.list_tenants(
            wire.plan_from_proto("plan", request.plan), page_size(request.page_size), request.page_token
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
        paths = list(request.update_mask.paths)
        tenant = self.tenants.update_tenant(
            tenant_id,
            paths,
            v.bounded_text("tenant.display_name", request.tenant.display_name, 200),
            wire.plan_from_proto("tenant.plan", request.tenant.plan),
            wire.overrides_from_proto(list(request.tenant.overrides)),
        )
        return pb.UpdateTenantResponse(tenant=wire.tenant_to_proto(tenant))

    # -- API keys ---------------------------------------------------------------------

    def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        expires = request.expire_time.ToDatetime(tzinfo=UTC) if request.HasField("expire_time") else None
        key, secret = self.tenants.create_key(
            v.name_id("tenant_id", request.tenant_id),
            v.bounded_text("display_name", request.display_name, 200),
            expires,
            v.optional_request_id(request.request_id),
        )
        return pb.CreateApiKeyResponse(api_key=wire.key_to_proto(key), secret=secret)

    def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: grpc.ServicerContext
    ) -> pb.ListApiKeysResponse:
        page = self.tenants.list_keys(
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
        key = self.tenants.revoke_key(
            v.name_id("tenant_id", request.tenant_id), v.uuid_id("api_key_id", request.api_key_id)
        )
        return pb.RevokeApiKeyResponse(api_key=wire.key_to_proto(key))

    def Authenticate(
        self, request: pb.AuthenticateRequest, context: grpc.ServicerContext
    ) -> pb.AuthenticateResponse:
        tenant, key = self.tenants.authenticate(request.secret[:MAX_SECRET])
        return pb.AuthenticateResponse(tenant=wire.tenant_to_proto(tenant), api_key_id=key.id)

    # -- quotas -------------------------------------------------------------------------

    def Consume(self, request: pb.ConsumeRequest, context: grpc.ServicerContext) -> pb.ConsumeResponse:
        resource = wire.resource_from_proto("resource", request.resource)
        assert resource is not None
        usage = self.counters.consume(
            v.name_id("tenant_id", request.tenant_id),
            resource,
            request.amount,
            v.optional_request_id(request.request_id),
            request.allow_overage,
        )
        return pb.ConsumeResponse(usage=wire.usage_to_proto(usage))

    def Reserve(self, request: pb.ReserveRequest, context: grpc.ServicerContext) -> pb.ReserveResponse:
        resource = wire.resource_from_proto("resource", request.resource)
        assert resource is not None
        reservation, usage = self.counters.reserve(
            v.name_id("tenant_id", request.tenant_id),
            resource,
            request.amount,
            v.required_text("owner", request.owner, 200),
            v.optional_request_id(request.request_id),
        )
        return pb.ReserveResponse(
            reservation=wire.reservation_to_proto(reservation), usage=wire.usage_to_proto(usage)
        )

    def Release(self, request: pb.ReleaseRequest, context: grpc.ServicerContext) -> pb.ReleaseResponse:
        reservation, released, usage = self.counters.release(
            v.name_id("tenant_id", request.tenant_id), v.uuid_id("reservation_id", request.reservation_id)
        )
        return pb.ReleaseResponse(
            reservation=wire.reservation_to_proto(reservation),
            released=released,
            usage=wire.usage_to_proto(usage),
        )

    def ListReservations(
        self, request: pb.ListReservationsRequest, context: grpc.ServicerContext
    ) -> pb.ListReservationsResponse:
        page = self.counters.list_reservations(
            v.name_id("tenant_id", request.tenant_id),
            wire.resource_from_proto("resource", request.resource, required=False),
            v.bounded_text("owner", request.owner, 200) or None,
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListReservationsResponse(
            reservations=[wire.reservation_to_proto(r) for r in page.items],
            next_page_token=page.next_page_token,
        )

    def GetUsage(self, request: pb.GetUsageRequest, context: grpc.ServicerContext) -> pb.GetUsageResponse:
        tenant, usages = self.counters.usage(v.name_id("tenant_id", request.tenant_id))
        return pb.GetUsageResponse(
            plan=wire.plan_to_proto(tenant.plan),  # type: ignore[arg-type]
            usages=[wire.usage_to_proto(u) for u in usages],
        )
