"""Every bad input gets the right status, names its field, and writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from swarm.quota.v1 import quota_pb2 as pb
from tests.quota.helpers import CALLS, TICKETS, VMS, consume, reserve, snapshot, tenant
from tests.support.harness import BACKENDS, QuotaHarness
from tests.support.status import raises_status

pytestmark = BACKENDS


@dataclass
class World:
    tenant: str
    other: str
    other_reservation: str
    other_key: str


Call = Callable[[QuotaHarness, World], object]
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def _update(q: QuotaHarness, w: World, paths: list[str], t: pb.Tenant | None = None) -> object:
    return q.stub.UpdateTenant(
        pb.UpdateTenantRequest(tenant_id=w.tenant, tenant=t or pb.Tenant(), update_mask={"paths": paths})
    )


def _past() -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime(2029, 12, 31, tzinfo=UTC))
    return ts


CASES = [
    # tenant ids
    pytest.param(lambda q, w: consume(q, ""), INVALID, "tenant_id", id="consume-empty-tenant"),
    pytest.param(lambda q, w: consume(q, "no such!"), INVALID, "tenant_id", id="consume-bad-tenant"),
    pytest.param(lambda q, w: consume(q, "x" * 129), INVALID, "tenant_id", id="consume-long-tenant"),
    pytest.param(lambda q, w: consume(q, "ghost"), NOT_FOUND, "tenant ghost not found", id="consume-unknown"),
    pytest.param(lambda q, w: reserve(q, "ghost"), NOT_FOUND, "ghost", id="reserve-unknown-tenant"),
    pytest.param(
        lambda q, w: q.stub.GetTenant(pb.GetTenantRequest(tenant_id="-x")),
        INVALID,
        "tenant_id",
        id="get-bad-id",
    ),
    pytest.param(
        lambda q, w: q.stub.GetTenant(pb.GetTenantRequest(tenant_id="ghost")),
        NOT_FOUND,
        "ghost",
        id="get-unknown",
    ),
    pytest.param(
        lambda q, w: q.stub.GetUsage(pb.GetUsageRequest(tenant_id="ghost")),
        NOT_FOUND,
        "ghost",
        id="usage-unknown",
    ),
    pytest.param(
        lambda q, w: q.stub.CreateTenant(pb.CreateTenantRequest(tenant_id="a b")),
        INVALID,
        "tenant_id",
        id="create-bad-id",
    ),
    # amounts
    pytest.param(lambda q, w: consume(q, w.tenant, 0), INVALID, "amount", id="zero-amount"),
    pytest.param(lambda q, w: consume(q, w.tenant, -5), INVALID, "amount", id="negative-amount"),
    pytest.param(lambda q, w: consume(q, w.tenant, 10**13), INVALID, "amount", id="huge-amount"),
    pytest.param(
        lambda q, w: q.stub.Reserve(pb.ReserveRequest(tenant_id=w.tenant, resource=VMS, amount=0, owner="o")),
        INVALID,
        "amount",
        id="reserve-zero",
    ),
    # resources and plans
    pytest.param(
        lambda q, w: consume(q, w.tenant, resource=0), INVALID, "resource", id="unspecified-resource"
    ),
    pytest.param(lambda q, w: consume(q, w.tenant, resource=99), INVALID, "resource", id="unknown-resource"),
    pytest.param(lambda q, w: consume(q, w.tenant, resource=VMS), INVALID, "Reserve", id="vms-consumed"),
    pytest.param(
        lambda q, w: q.stub.Reserve(
            pb.ReserveRequest(tenant_id=w.tenant, resource=TICKETS, amount=1, owner="o")
        ),
        INVALID,
        "Consume",
        id="tickets-reserved",
    ),
    pytest.param(
        lambda q, w: q.stub.Reserve(pb.ReserveRequest(tenant_id=w.tenant, resource=0, amount=1, owner="o")),
        INVALID,
        "resource",
        id="reserve-unspecified",
    ),
    pytest.param(
        lambda q, w: q.stub.Reserve(pb.ReserveRequest(tenant_id=w.tenant, resource=VMS, amount=1)),
        INVALID,
        "owner",
        id="reserve-no-owner",
    ),
    pytest.param(
        lambda q, w: q.stub.CreateTenant(pb.CreateTenantRequest(tenant_id="new", plan=9)),  # type: ignore[arg-type]
        INVALID,
        "plan",
        id="create-unknown-plan",
    ),
    pytest.param(
        lambda q, w: q.stub.ListTenants(pb.ListTenantsRequest(plan=9)),  # type: ignore[arg-type]
        INVALID,
        "plan",
        id="list-unknown-plan",
    ),
    pytest.param(
        lambda q, w: q.stub.ListReservations(pb.ListReservationsRequest(tenant_id=w.tenant, resource=42)),
        INVALID,
        "resource",
        id="list-reservations-unknown-resource",
    ),
    # overrides
    pytest.param(
        lambda q, w: q.stub.CreateTenant(
            pb.CreateTenantRequest(tenant_id="neg", overrides=[pb.QuotaOverride(resource=VMS, limit=-1)])
        ),
        INVALID,
        "overrides[0].limit",
        id="negative-override",
    ),
    pytest.param(
        lambda q, w: q.stub.CreateTenant(
            pb.CreateTenantRequest(
                tenant_id="dup",
                overrides=[pb.QuotaOverride(resource=VMS, limit=1), pb.QuotaOverride(resource=VMS, limit=2)],
            )
        ),
        INVALID,
        "overrides[1].resource",
        id="duplicate-override",
    ),
    pytest.param(
        lambda q, w: q.stub.CreateTenant(
            pb.CreateTenantRequest(tenant_id="u", overrides=[pb.QuotaOverride(limit=1)])
        ),
        INVALID,
        "overrides[0].resource",
        id="unspecified-override",
    ),
    pytest.param(
        lambda q, w: _update(
            q, w, ["overrides"], pb.Tenant(overrides=[pb.QuotaOverride(resource=CALLS, limit=-3)])
        ),
        INVALID,
        "overrides[0].limit",
        id="update-negative-override",
    ),
    # update masks
    pytest.param(lambda q, w: _update(q, w, ["id"]), INVALID, "update_mask", id="bad-mask-path"),
    pytest.param(lambda q, w: _update(q, w, []), INVALID, "update_mask", id="empty-mask"),
    pytest.param(lambda q, w: _update(q, w, ["plan"]), INVALID, "tenant.plan", id="mask-plan-unspecified"),
    pytest.param(
        lambda q, w: _update(q, w, ["display_name"], pb.Tenant(id="zzz")),
        INVALID,
        "tenant.id",
        id="id-mismatch",
    ),
    pytest.param(
        lambda q, w: q.stub.UpdateTenant(
            pb.UpdateTenantRequest(tenant_id="ghost", update_mask={"paths": ["display_name"]})
        ),
        NOT_FOUND,
        "ghost",
        id="update-unknown",
    ),
    # pagination
    pytest.param(
        lambda q, w: q.stub.ListTenants(pb.ListTenantsRequest(page_size=-1)),
        INVALID,
        "page_size",
        id="negative-page",
    ),
    pytest.param(
        lambda q, w: q.stub.ListApiKeys(pb.ListApiKeysRequest(tenant_id=w.tenant, page_size=-1)),
        INVALID,
        "page_size",
        id="keys-negative-page",
    ),
    pytest.param(
        lambda q, w: q.stub.ListReservations(
            pb.ListReservationsRequest(tenant_id=w.tenant, page_token="junk")
        ),
        INVALID,
        "page_token",
        id="bad-page-token",
    ),
    # ids the service issued, and other tenants' objects
    pytest.param(
        lambda q, w: q.stub.Release(pb.ReleaseRequest(tenant_id=w.tenant, reservation_id=str(uuid.uuid4()))),
        NOT_FOUND,
        "reservation",
        id="release-unknown",
    ),
    pytest.param(
        lambda q, w: q.stub.Release(pb.ReleaseRequest(tenant_id=w.tenant, reservation_id="nope")),
        INVALID,
        "reservation_id",
        id="release-malformed-id",
    ),
    pytest.param(
        lambda q, w: q.stub.Release(
            pb.ReleaseRequest(tenant_id=w.tenant, reservation_id=w.other_reservation)
        ),
        NOT_FOUND,
        "reservation",
        id="release-another-tenants",
    ),
    pytest.param(
        lambda q, w: q.stub.RevokeApiKey(pb.RevokeApiKeyRequest(tenant_id=w.tenant, api_key_id=w.other_key)),
        NOT_FOUND,
        "API key",
        id="revoke-another-tenants-key",
    ),
    pytest.param(
        lambda q, w: q.stub.RevokeApiKey(pb.RevokeApiKeyRequest(tenant_id=w.tenant, api_key_id="k")),
        INVALID,
        "api_key_id",
        id="revoke-malformed-id",
    ),
    # creates
    pytest.param(
        lambda q, w: q.stub.CreateTenant(pb.CreateTenantRequest(tenant_id=w.tenant)),
        grpc.StatusCode.ALREADY_EXISTS,
        "already exists",
        id="duplicate-tenant",
    ),
    pytest.param(
        lambda q, w: q.stub.CreateTenant(pb.CreateTenantRequest(tenant_id="long", display_name="x" * 201)),
        INVALID,
        "display_name",
        id="long-display-name",
    ),
    pytest.param(
        lambda q, w: q.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id="ghost")),
        NOT_FOUND,
        "ghost",
        id="key-for-unknown-tenant",
    ),
    pytest.param(
        lambda q, w: q.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id=w.tenant, expire_time=_past())),
        INVALID,
        "expire_time",
        id="key-expired-at-birth",
    ),
    pytest.param(
        lambda q, w: consume(q, w.tenant, request_id="has space"), INVALID, "request_id", id="bad-request-id"
    ),
]


@pytest.mark.parametrize(("call", "code", "fragment"), CASES)
def test_bad_input_is_rejected_and_writes_nothing(
    quota: QuotaHarness, call: Call, code: grpc.StatusCode, fragment: str
) -> None:
    tid, other = tenant(quota), tenant(quota)
    consume(quota, tid, 1)
    world = World(
        tid,
        other,
        reserve(quota, other).reservation.id,
        quota.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id=other)).api_key.id,
    )
    before = snapshot(quota)
    with raises_status(code, fragment):
        call(quota, world)
    assert snapshot(quota) == before
