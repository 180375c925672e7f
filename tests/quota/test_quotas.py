"""Quota admission through the real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from swarm.quota.v1 import quota_pb2 as pb
from tests.conftest import BACKENDS, QuotaHarness
from tests.ticketing.helpers import raises_status

pytestmark = BACKENDS

VMS, TICKETS, CALLS = pb.RESOURCE_VMS, pb.RESOURCE_TICKETS_PER_DAY, pb.RESOURCE_API_CALLS_PER_HOUR


def tenant(q: QuotaHarness, plan: int = pb.PLAN_PRO, **limits: int) -> str:
    tid = f"t-{uuid.uuid4().hex[:8]}"
    overrides = [
        pb.QuotaOverride(resource=pb.Resource.Value(f"RESOURCE_{k.upper()}"), limit=v)
        for k, v in limits.items()
    ]
    q.stub.CreateTenant(pb.CreateTenantRequest(tenant_id=tid, plan=plan, overrides=overrides))
    return tid


def consume(
    q: QuotaHarness, tid: str, amount: int = 1, resource: int = TICKETS, request_id: str = ""
) -> pb.ConsumeResponse:
    return q.stub.Consume(
        pb.ConsumeRequest(tenant_id=tid, resource=resource, amount=amount, request_id=request_id)
    )


def reserve(q: QuotaHarness, tid: str, request_id: str = "") -> pb.ReserveResponse:
    return q.stub.Reserve(
        pb.ReserveRequest(tenant_id=tid, resource=VMS, amount=1, owner="vmhost", request_id=request_id)
    )


def _outcomes(calls: list[object]) -> tuple[int, list[grpc.RpcError]]:
    ok = [c for c in calls if not isinstance(c, grpc.RpcError)]
    refused = [c for c in calls if isinstance(c, grpc.RpcError)]
    return len(ok), refused


def _try(fn: object) -> object:
    try:
        return fn()  # type: ignore[operator]
    except grpc.RpcError as err:
        return err


def test_100_concurrent_consumes_against_a_limit_of_10_admit_exactly_10(quota: QuotaHarness) -> None:
    tid = tenant(quota, tickets_per_day=10)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda _: _try(lambda: consume(quota, tid)), range(100)))
    admitted, refused = _outcomes(results)
    assert admitted == 10
    assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
    status = rpc_status.from_call(refused[0])  # type: ignore[arg-type]
    assert status is not None
    info, failure = error_details_pb2.ErrorInfo(), error_details_pb2.QuotaFailure()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(failure)
    assert info.domain == "swarm.quota" and info.metadata["resource"] == "tickets_per_day"
    assert info.metadata["current"] == "10" and info.metadata["limit"] == "10"
    assert info.metadata["resets_at"] == "2030-01-02T00:00:00Z"
    assert "Ticket limit reached (10/10 today)" in refused[0].details()
    usage = {u.resource: u for u in quota.stub.GetUsage(pb.GetUsageRequest(tenant_id=tid)).usages}
    assert usage[TICKETS].used == 10 and usage[TICKETS].remaining == 0


def test_50_concurrent_reserves_for_5_vms_admit_exactly_5_and_release_frees(quota: QuotaHarness) -> None:
    tid = tenant(quota, vms=5)
    with ThreadPoolExecutor(25) as pool:
        results = list(pool.map(lambda _: _try(lambda: reserve(quota, tid)), range(50)))
    admitted, refused = _outcomes(results)
    assert admitted == 5 and len(refused) == 45
    assert "VM limit reached (5/5). Upgrade plan or wait for VMs to complete." in refused[0].details()
    held = [r for r in results if isinstance(r, pb.ReserveResponse)]
    for r in held[:2]:
        out = quota.stub.Release(pb.ReleaseRequest(tenant_id=tid, reservation_id=r.reservation.id))
        assert out.released
    again = quota.stub.Release(pb.ReleaseRequest(tenant_id=tid, reservation_id=held[0].reservation.id))
    assert not again.released and again.usage.used == 3  # a double release changes nothing
    with ThreadPoolExecutor(10) as pool:
        more = list(pool.map(lambda _: _try(lambda: reserve(quota, tid)), range(10)))
    assert _outcomes(more)[0] == 2
    live = quota.stub.ListReservations(pb.ListReservationsRequest(tenant_id=tid)).reservations
    assert len(live) == 5


def test_a_repeated_request_id_is_counted_once_even_concurrently(quota: QuotaHarness) -> None:
    tid = tenant(quota, tickets_per_day=100)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: consume(quota, tid, 7, request_id="charge-1"), range(8)))
    assert {r.usage.used for r in results} == {7}
    assert consume(quota, tid, 1).usage.used == 8
    with ThreadPoolExecutor(8) as pool:
        held = list(pool.map(lambda _: reserve(quota, tid, request_id="vm-1"), range(8)))
    assert len({h.reservation.id for h in held}) == 1
    assert quota.stub.GetUsage(pb.GetUsageRequest(tenant_id=tid)).usages[0].used == 1


def test_windows_reset_at_utc_boundaries(quota: QuotaHarness) -> None:
    tid = tenant(quota, tickets_per_day=2, api_calls_per_hour=1)
    # ManualClock starts at 2030-01-01T00:00Z; move to a minute before midnight.
    quota.clock.advance(timedelta(hours=23, minutes=59))
    consume(quota, tid, 2)
    consume(quota, tid, 1, resource=CALLS)
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED):
        consume(quota, tid, 1)
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "API call limit reached (1/1 this hour)"):
        consume(quota, tid, 1, resource=CALLS)
    quota.clock.advance(timedelta(minutes=1))  # 2030-01-02T00:00Z: a new day and a new hour
    usage = consume(quota, tid, 2).usage
    assert usage.used == 2
    assert usage.window_start_time.ToDatetime(tzinfo=UTC) == datetime(2030, 1, 2, tzinfo=UTC)
    assert usage.reset_time.ToDatetime(tzinfo=UTC) == datetime(2030, 1, 3, tzinfo=UTC)
    assert consume(quota, tid, 1, resource=CALLS).usage.reset_time.ToDatetime(tzinfo=UTC) == datetime(
        2030, 1, 2, 1, tzinfo=UTC
    )


def test_plan_defaults_overrides_and_plan_changes(quota: QuotaHarness) -> None:
    free = tenant(quota, plan=pb.PLAN_FREE)
    limits = {
        q.resource: q
        for q in quota.stub.GetTenant(pb.GetTenantRequest(tenant_id=free)).tenant.effective_limits
    }
    assert (limits[VMS].limit, limits[TICKETS].limit, limits[CALLS].limit) == (2, 10, 100)
    assert limits[pb.RESOURCE_COST_USD_MONTH].unlimited
    updated = quota.stub.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant_id=free,
            tenant=pb.Tenant(plan=pb.PLAN_ENTERPRISE, overrides=[pb.QuotaOverride(resource=VMS, limit=7)]),
            update_mask={"paths": ["plan", "overrides"]},
        )
    ).tenant
    limits = {q.resource: q.limit for q in updated.effective_limits}
    assert (limits[VMS], limits[TICKETS], limits[CALLS]) == (7, 10_000, 100_000)


def test_overage_is_recorded_but_later_admissions_refused(quota: QuotaHarness) -> None:
    tid = tenant(quota, cost_usd_month=1_000_000)
    out = quota.stub.Consume(
        pb.ConsumeRequest(
            tenant_id=tid, resource=pb.RESOURCE_COST_USD_MONTH, amount=1_500_000, allow_overage=True
        )
    )
    assert out.usage.used == 1_500_000
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "Monthly cost budget reached"):
        consume(quota, tid, 1, resource=pb.RESOURCE_COST_USD_MONTH)


@pytest.mark.parametrize(
    ("call", "code", "fragment"),
    [
        pytest.param(
            lambda q, t: consume(q, ""), grpc.StatusCode.INVALID_ARGUMENT, "tenant_id", id="empty-tenant"
        ),
        pytest.param(
            lambda q, t: consume(q, "no such!"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "tenant_id",
            id="bad-tenant",
        ),
        pytest.param(
            lambda q, t: consume(q, "ghost"), grpc.StatusCode.NOT_FOUND, "ghost", id="unknown-tenant"
        ),
        pytest.param(
            lambda q, t: consume(q, t, 0), grpc.StatusCode.INVALID_ARGUMENT, "amount", id="zero-amount"
        ),
        pytest.param(
            lambda q, t: consume(q, t, -5), grpc.StatusCode.INVALID_ARGUMENT, "amount", id="negative"
        ),
        pytest.param(
            lambda q, t: consume(q, t, 1, resource=0),
            grpc.StatusCode.INVALID_ARGUMENT,
            "resource",
            id="unspecified",
        ),
        pytest.param(
            lambda q, t: consume(q, t, 1, resource=99),
            grpc.StatusCode.INVALID_ARGUMENT,
            "resource",
            id="bad-enum",
        ),
        pytest.param(
            lambda q, t: consume(q, t, 1, resource=VMS),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Reserve",
            id="vms-consumed",
        ),
        pytest.param(
            lambda q, t: q.stub.Reserve(
                pb.ReserveRequest(tenant_id=t, resource=TICKETS, amount=1, owner="o")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Consume",
            id="tickets-reserved",
        ),
        pytest.param(
            lambda q, t: q.stub.Reserve(pb.ReserveRequest(tenant_id=t, resource=VMS, amount=1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "owner",
            id="reserve-no-owner",
        ),
        pytest.param(
            lambda q, t: q.stub.Release(pb.ReleaseRequest(tenant_id=t, reservation_id=str(uuid.uuid4()))),
            grpc.StatusCode.NOT_FOUND,
            "reservation",
            id="release-unknown",
        ),
        pytest.param(
            lambda q, t: q.stub.ListTenants(pb.ListTenantsRequest(page_size=-1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_size",
            id="negative-page-size",
        ),
        pytest.param(
            lambda q, t: q.stub.UpdateTenant(
                pb.UpdateTenantRequest(tenant_id=t, update_mask={"paths": ["id"]})
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "update_mask",
            id="bad-mask-path",
        ),
        pytest.param(
            lambda q, t: q.stub.UpdateTenant(pb.UpdateTenantRequest(tenant_id=t)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "update_mask",
            id="empty-mask",
        ),
        pytest.param(
            lambda q, t: q.stub.CreateTenant(pb.CreateTenantRequest(tenant_id=t)),
            grpc.StatusCode.ALREADY_EXISTS,
            "already exists",
            id="duplicate-tenant",
        ),
        pytest.param(
            lambda q, t: q.stub.CreateTenant(
                pb.CreateTenantRequest(tenant_id="neg", overrides=[pb.QuotaOverride(resource=VMS, limit=-1)])
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "overrides[0].limit",
            id="negative-override",
        ),
        pytest.param(
            lambda q, t: q.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id="ghost")),
            grpc.StatusCode.NOT_FOUND,
            "ghost",
            id="key-for-unknown-tenant",
        ),
    ],
)
def test_bad_input_is_rejected_and_writes_nothing(
    quota: QuotaHarness, call: object, code: grpc.StatusCode, fragment: str
) -> None:
    tid = tenant(quota)
    consume(quota, tid, 1)
    before = quota.stub.GetUsage(pb.GetUsageRequest(tenant_id=tid))
    tenants_before = len(quota.stub.ListTenants(pb.ListTenantsRequest(page_size=1000)).tenants)
    with raises_status(code, fragment):
        call(quota, tid)  # type: ignore[operator]
    assert quota.stub.GetUsage(pb.GetUsageRequest(tenant_id=tid)) == before
    assert len(quota.stub.ListTenants(pb.ListTenantsRequest(page_size=1000)).tenants) == tenants_before
