"""Quota admission through the real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2

from swarm.quota.v1 import quota_pb2 as pb
from tests.quota.helpers import CALLS, COST, TICKETS, VMS, consume, release, reserve, tenant, usage
from tests.support.harness import BACKENDS, QuotaHarness
from tests.support.status import attempt, raises_status, refusals, rpc_details

pytestmark = BACKENDS


def test_quota_never_over_admits_under_concurrency(quota: QuotaHarness) -> None:
    tid = tenant(quota, tickets_per_day=10)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda _: attempt(lambda: consume(quota, tid)), range(100)))
    admitted, refused = refusals(results)
    assert len(admitted) == 10 and len(refused) == 90
    assert sorted(a.usage.used for a in admitted) == list(range(1, 11))
    assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
    found = rpc_details(refused[0])
    info = found["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("QUOTA_EXCEEDED", "swarm.quota")
    assert dict(info.metadata) == {
        "resource": "tickets_per_day",
        "current": "10",
        "limit": "10",
        "resets_at": "2030-01-02T00:00:00Z",
    }
    failure = found["QuotaFailure"]
    assert isinstance(failure, error_details_pb2.QuotaFailure)
    assert "Ticket limit reached" in failure.violations[0].description
    retry = found["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay == Duration(seconds=24 * 3600)  # the clock stands at midnight
    assert refused[0].details() == (
        "Ticket limit reached (10/10 today). Upgrade plan or wait until 2030-01-02T00:00:00Z."
    )
    assert usage(quota, tid)[TICKETS].used == 10 and usage(quota, tid)[TICKETS].remaining == 0


def test_concurrent_reserves_never_exceed_max_vms_and_release_frees(quota: QuotaHarness) -> None:
    tid = tenant(quota, vms=5)
    with ThreadPoolExecutor(25) as pool:
        results = list(pool.map(lambda _: attempt(lambda: reserve(quota, tid)), range(50)))
    held, refused = refusals(results)
    assert len(held) == 5 and len(refused) == 45
    assert len({h.reservation.id for h in held}) == 5
    assert refused[0].details() == "VM limit reached (5/5). Upgrade plan or wait for VMs to complete."
    found = rpc_details(refused[0])
    info = found["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert dict(info.metadata) == {"resource": "vms", "current": "5", "limit": "5"}  # no resets_at
    assert "RetryInfo" not in found
    for h in held[:2]:
        out = release(quota, tid, h.reservation.id)
        assert out.released and out.reservation.HasField("release_time")
    again = release(quota, tid, held[0].reservation.id)
    assert not again.released and again.usage.used == 3  # a double release changes nothing
    with ThreadPoolExecutor(10) as pool:
        more = list(pool.map(lambda _: attempt(lambda: reserve(quota, tid)), range(10)))
    assert len(refusals(more)[0]) == 2
    assert usage(quota, tid)[VMS].used == 5
    live = quota.stub.ListReservations(pb.ListReservationsRequest(tenant_id=tid)).reservations
    assert len(live) == 5 and held[0].reservation.id not in {r.id for r in live}


def test_amount_larger_than_the_limit_is_refused_on_an_empty_window(quota: QuotaHarness) -> None:
    tid = tenant(quota, tickets_per_day=3)
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "Ticket limit reached (0/3 today)"):
        consume(quota, tid, 4)
    assert consume(quota, tid, 3).usage.used == 3


def test_hour_window_resets_exactly_at_the_utc_hour(quota: QuotaHarness) -> None:
    tid = tenant(quota, api_calls_per_hour=1)
    quota.clock.advance(timedelta(hours=5, minutes=59, seconds=59))  # 05:59:59Z
    first = consume(quota, tid, resource=CALLS).usage
    assert first.window_start_time.ToDatetime(tzinfo=UTC) == datetime(2030, 1, 1, 5, tzinfo=UTC)
    assert first.reset_time.ToDatetime(tzinfo=UTC) == datetime(2030, 1, 1, 6, tzinfo=UTC)
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "API call limit reached (1/1 this hour)") as err:
        consume(quota, tid, resource=CALLS)
    retry = rpc_details(err[0])["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo) and retry.retry_delay == Duration(seconds=1)
    quota.clock.advance(timedelta(seconds=1))  # 06:00:00Z
    again = consume(quota, tid, resource=CALLS).usage
    assert again.used == 1
    assert again.reset_time.ToDatetime(tzinfo=UTC) == datetime(2030, 1, 1, 7, tzinfo=UTC)


def test_day_window_resets_at_utc_midnight(quota: QuotaHarness) -> None:
    tid = tenant(quota, tickets_per_day=2)
    quota.clock.advance(timedelta(hours=23, minutes=59, seconds=59))
    consume(quota, tid, 2)
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "wait until 2030-01-02T00:00:00Z"):
        consume(quota, tid, 1)
    quota.clock.advance(timedelta(seconds=1))
    now = consume(quota, tid, 2).usage
    assert now.used == 2
    assert now.window_start_time.ToDatetime(tzinfo=UTC) == datetime(2030, 1, 2, tzinfo=UTC)
    assert now.reset_time.ToDatetime(tzinfo=UTC) == datetime(2030, 1, 3, tzinfo=UTC)


def test_month_window_resets_on_the_first_of_the_next_month(quota: QuotaHarness) -> None:
    tid = tenant(quota, cost_usd_month=1_000_000)
    quota.clock.advance(timedelta(days=30, hours=23, minutes=59))  # 2030-01-31T23:59Z
    consume(quota, tid, 1_000_000, resource=COST)
    with raises_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Monthly cost budget reached ($1.00/$1.00)",
        "2030-02-01T00:00:00Z",
    ):
        consume(quota, tid, 1, resource=COST)
    quota.clock.advance(timedelta(minutes=1))
    feb = consume(quota, tid, 1, resource=COST).usage
    assert feb.used == 1
    assert feb.reset_time.ToDatetime(tzinfo=UTC) == datetime(2030, 3, 1, tzinfo=UTC)


def test_plan_defaults_overrides_and_plan_changes(quota: QuotaHarness) -> None:
    expected = {
        pb.PLAN_FREE: (2, 10, 100),
        pb.PLAN_PRO: (20, 500, 5000),
        pb.PLAN_ENTERPRISE: (100, 10_000, 100_000),
    }
    for plan, limits in expected.items():
        t = quota.stub.GetTenant(pb.GetTenantRequest(tenant_id=tenant(quota, plan=plan))).tenant
        effective = {q.resource: q for q in t.effective_limits}
        assert (effective[VMS].limit, effective[TICKETS].limit, effective[CALLS].limit) == limits
        assert effective[COST].unlimited and effective[COST].limit == 0
    unset = quota.stub.CreateTenant(pb.CreateTenantRequest(tenant_id="no-plan")).tenant
    assert unset.plan == pb.PLAN_FREE
    tid = tenant(quota, plan=pb.PLAN_FREE)
    updated = quota.stub.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant_id=tid,
            tenant=pb.Tenant(plan=pb.PLAN_ENTERPRISE, overrides=[pb.QuotaOverride(resource=VMS, limit=7)]),
            update_mask={"paths": ["plan", "overrides"]},
        )
    ).tenant
    limits = {q.resource: q.limit for q in updated.effective_limits}
    assert (limits[VMS], limits[TICKETS], limits[CALLS]) == (7, 10_000, 100_000)
    for _ in range(7):
        reserve(quota, tid)
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "VM limit reached (7/7)"):
        reserve(quota, tid)


def test_lowering_a_limit_below_usage_revokes_nothing_and_refuses_new_admissions(
    quota: QuotaHarness,
) -> None:
    tid = tenant(quota, plan=pb.PLAN_PRO)
    consume(quota, tid, 8)
    quota.stub.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant_id=tid, tenant=pb.Tenant(plan=pb.PLAN_FREE), update_mask={"paths": ["plan"]}
        )
    )
    now = usage(quota, tid)[TICKETS]
    assert (now.used, now.limit, now.remaining) == (8, 10, 2)
    consume(quota, tid, 2)
    quota.stub.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant_id=tid,
            tenant=pb.Tenant(overrides=[pb.QuotaOverride(resource=TICKETS, limit=5)]),
            update_mask={"paths": ["overrides"]},
        )
    )
    assert (usage(quota, tid)[TICKETS].used, usage(quota, tid)[TICKETS].remaining) == (10, 0)
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "Ticket limit reached (10/5 today)"):
        consume(quota, tid, 1)


def test_get_usage_reports_every_resource_in_enum_order(quota: QuotaHarness) -> None:
    tid = tenant(quota, plan=pb.PLAN_FREE, cost_usd_month=5_000_000)
    quota.clock.advance(timedelta(days=40, hours=3, minutes=30))  # 2030-02-10T03:30Z
    reserve(quota, tid)
    consume(quota, tid, 4)
    consume(quota, tid, 30, resource=CALLS)
    consume(quota, tid, 1_250_000, resource=COST)
    response = quota.stub.GetUsage(pb.GetUsageRequest(tenant_id=tid))
    assert response.plan == pb.PLAN_FREE
    assert [u.resource for u in response.usages] == [VMS, TICKETS, CALLS, COST]
    got = {
        u.resource: (
            u.used,
            u.limit,
            u.unlimited,
            u.remaining,
            u.window_start_time.ToDatetime(tzinfo=UTC) if u.HasField("window_start_time") else None,
            u.reset_time.ToDatetime(tzinfo=UTC) if u.HasField("reset_time") else None,
        )
        for u in response.usages
    }
    assert got == {
        VMS: (1, 2, False, 1, None, None),
        TICKETS: (4, 10, False, 6, datetime(2030, 2, 10, tzinfo=UTC), datetime(2030, 2, 11, tzinfo=UTC)),
        CALLS: (
            30,
            100,
            False,
            70,
            datetime(2030, 2, 10, 3, tzinfo=UTC),
            datetime(2030, 2, 10, 4, tzinfo=UTC),
        ),
        COST: (
            1_250_000,
            5_000_000,
            False,
            3_750_000,
            datetime(2030, 2, 1, tzinfo=UTC),
            datetime(2030, 3, 1, tzinfo=UTC),
        ),
    }


def test_cost_is_unlimited_without_an_override(quota: QuotaHarness) -> None:
    tid = tenant(quota)
    out = consume(quota, tid, 10**12, resource=COST).usage
    assert (out.used, out.unlimited, out.limit, out.remaining) == (10**12, True, 0, 0)


def test_overage_is_recorded_but_later_admissions_refused(quota: QuotaHarness) -> None:
    tid = tenant(quota, cost_usd_month=1_000_000)
    out = quota.stub.Consume(
        pb.ConsumeRequest(tenant_id=tid, resource=COST, amount=1_500_000, allow_overage=True)
    )
    assert out.usage.used == 1_500_000 and out.usage.remaining == 0
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "Monthly cost budget reached ($1.50/$1.00)"):
        consume(quota, tid, 1, resource=COST)
