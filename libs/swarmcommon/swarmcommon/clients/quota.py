"""The quota service: windowed consumption and VM reservations."""

from __future__ import annotations

from swarm.quota.v1 import quota_pb2 as pb
from swarm.quota.v1 import quota_pb2_grpc as pb_grpc
from swarmcommon.clients.base import ServiceClient


class QuotaClient(ServiceClient):
    stub_class = pb_grpc.QuotaServiceStub

    def consume(
        self,
        tenant_id: str,
        resource: pb.Resource,
        amount: int,
        request_id: str,
        *,
        allow_overage: bool = False,
    ) -> pb.ResourceUsage:
        """Admit `amount` of `resource` or raise QuotaExceeded (nothing consumed)."""
        reply: pb.ConsumeResponse = self.stub.Consume(
            pb.ConsumeRequest(
                tenant_id=tenant_id,
                resource=resource,
                amount=amount,
                allow_overage=allow_overage,
                request_id=request_id,
            )
        )
        return reply.usage

    def reserve_vm(self, tenant_id: str, owner: str, request_id: str) -> str:
        """Hold one of the tenant's `max_vms`; returns the reservation id."""
        reply = self.stub.Reserve(
            pb.ReserveRequest(
                tenant_id=tenant_id, resource=pb.RESOURCE_VMS, amount=1, owner=owner, request_id=request_id
            )
        )
        return str(reply.reservation.id)

    def vm_reservations(self, tenant_id: str, owner: str) -> list[str]:
        """The ids of the live VM reservations `owner` holds (for reconciling
        one whose id the holder never recorded)."""
        ids: list[str] = []
        page_token = ""
        while True:
            reply = self.stub.ListReservations(
                pb.ListReservationsRequest(
                    tenant_id=tenant_id, resource=pb.RESOURCE_VMS, owner=owner, page_token=page_token
                )
            )
            ids += [str(r.id) for r in reply.reservations]
            page_token = reply.next_page_token
            if not page_token:
                return ids

    def release(self, tenant_id: str, reservation_id: str, request_id: str = "") -> bool:
        """Give a reservation back; False when it was already released."""
        reply = self.stub.Release(
            pb.ReleaseRequest(tenant_id=tenant_id, reservation_id=reservation_id, request_id=request_id)
        )
        return bool(reply.released)

    def limit(self, tenant_id: str, resource: pb.Resource) -> int | None:
        """The tenant's limit for `resource`; None when unlimited."""
        reply = self.stub.GetUsage(pb.GetUsageRequest(tenant_id=tenant_id))
        for usage in reply.usages:
            if usage.resource == resource:
                return None if usage.unlimited else int(usage.limit)
        return None
