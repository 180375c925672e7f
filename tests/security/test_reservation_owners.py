"""vmhost and telemetry's LLM proxy both hold quota reservations; each may
touch only its own kind (an attacker holding vmhost's identity cannot spend
the LLM budget, nor the proxy free VMs)."""

from __future__ import annotations

import grpc
import pytest

from swarm.quota.v1 import quota_pb2 as pb
from swarm.quota.v1 import quota_pb2_grpc as pb_grpc
from tests.support.pki import MeshPki, own_channel
from tests.support.secure import SecureService


def _stub(servers: dict[str, SecureService], pki: MeshPki, identity: str) -> pb_grpc.QuotaServiceStub:
    return pb_grpc.QuotaServiceStub(own_channel(servers["quota"].target, pki.identity(identity)))


def _reserve(stub: pb_grpc.QuotaServiceStub, resource: int, amount: int) -> pb.ReserveResponse:
    reply: pb.ReserveResponse = stub.Reserve(
        pb.ReserveRequest(tenant_id="acme", resource=resource, amount=amount, owner="x")  # type: ignore[arg-type]
    )
    return reply


def test_each_service_reserves_and_releases_only_its_own_resource(
    servers: dict[str, SecureService], pki: MeshPki
) -> None:
    admin = _stub(servers, pki, "operator-admin")
    admin.CreateTenant(pb.CreateTenantRequest(tenant_id="acme", plan=pb.PLAN_PRO))
    vmhost, telemetry = _stub(servers, pki, "vmhost"), _stub(servers, pki, "telemetry")

    with pytest.raises(grpc.RpcError) as denied:
        _reserve(vmhost, pb.RESOURCE_COST_USD_MONTH, 1000)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as denied:
        _reserve(telemetry, pb.RESOURCE_VMS, 1)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    vm = _reserve(vmhost, pb.RESOURCE_VMS, 1).reservation
    with pytest.raises(grpc.RpcError) as denied:
        telemetry.Release(pb.ReleaseRequest(tenant_id="acme", reservation_id=vm.id))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    held = admin.ListReservations(pb.ListReservationsRequest(tenant_id="acme"))
    assert [r.id for r in held.reservations] == [vm.id]  # still held: nothing was written
    assert vmhost.Release(pb.ReleaseRequest(tenant_id="acme", reservation_id=vm.id)).released
