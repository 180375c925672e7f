"""Cost reservations: an LLM call's estimated cost held against the monthly
budget (COST_USD_MONTH) and settled by one Release that gives the estimate
back and charges the actual cost, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
from google.rpc import error_details_pb2

from swarm.quota.v1 import quota_pb2 as pb
from tests.quota.helpers import COST, VMS, reserve, snapshot, tenant, usage
from tests.support.harness import BACKENDS, QuotaHarness
from tests.support.status import attempt, raises_status, refusals, rpc_details

pytestmark = BACKENDS


def hold(q: QuotaHarness, tid: str, amount: int, request_id: str = "") -> pb.ReserveResponse:
    return q.stub.Reserve(
        pb.ReserveRequest(
            tenant_id=tid, resource=COST, amount=amount, owner="telemetry/llm-proxy", request_id=request_id
        )
    )


def settle(
    q: QuotaHarness, tid: str, reservation_id: str, actual: int, request_id: str = ""
) -> pb.ReleaseResponse:
    return q.stub.Release(
        pb.ReleaseRequest(
            tenant_id=tid, reservation_id=reservation_id, consume_amount=actual, request_id=request_id
        )
    )


def test_an_estimate_is_held_and_settled_to_the_actual_cost(quota: QuotaHarness) -> None:
    tid = tenant(quota, cost_usd_month=1_000_000)
    held = hold(quota, tid, 300_000)
    assert held.usage.used == 300_000 and held.reservation.resource == COST
    assert usage(quota, tid)[COST].used == 300_000

    settled = settle(quota, tid, held.reservation.id, 120_000)
    assert settled.released and settled.consumed_amount == 120_000
    assert settled.usage.used == 120_000
    assert settled.reservation.HasField("release_time")
    assert usage(quota, tid)[COST].used == 120_000


def test_an_estimate_that_does_not_fit_is_refused_and_holds_nothing(quota: QuotaHarness) -> None:
    tid = tenant(quota, cost_usd_month=1_000_000)
    hold(quota, tid, 700_000)
    before = snapshot(quota)
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "Monthly cost budget reached") as caught:
        hold(quota, tid, 400_000)
    info = rpc_details(caught[0])["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.metadata["resource"] == "cost_usd_month"
    assert info.metadata["resets_at"] == "2030-02-01T00:00:00Z"
    assert snapshot(quota) == before


def test_settling_twice_charges_once(quota: QuotaHarness) -> None:
    tid = tenant(quota, cost_usd_month=1_000_000)
    held = hold(quota, tid, 300_000)
    settle(quota, tid, held.reservation.id, 250_000)
    again = settle(quota, tid, held.reservation.id, 250_000)  # no request id: by the reservation's state
    assert not again.released and again.consumed_amount == 0
    assert usage(quota, tid)[COST].used == 250_000


def test_concurrent_settlements_of_one_reservation_charge_once(quota: QuotaHarness) -> None:
    tid = tenant(quota, cost_usd_month=10_000_000)
    held = hold(quota, tid, 300_000)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: settle(quota, tid, held.reservation.id, 410_000), range(16)))
    assert sorted(r.consumed_amount for r in results) == [0] * 15 + [410_000]
    assert usage(quota, tid)[COST].used == 410_000


def test_a_retried_settlement_answers_as_the_first(quota: QuotaHarness) -> None:
    tid = tenant(quota, cost_usd_month=1_000_000)
    held = hold(quota, tid, 300_000)
    first = settle(quota, tid, held.reservation.id, 90_000, request_id="settle-1")
    before = snapshot(quota)
    retry = settle(quota, tid, held.reservation.id, 90_000, request_id="settle-1")
    assert (
        (retry.released, retry.consumed_amount) == (True, 90_000) == (first.released, first.consumed_amount)
    )
    assert snapshot(quota) == before
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id"):
        settle(quota, tid, held.reservation.id, 91_000, request_id="settle-1")


def test_the_actual_cost_is_charged_past_the_limit(quota: QuotaHarness) -> None:
    """The money is spent: settlement never refuses; later estimates are."""
    tid = tenant(quota, cost_usd_month=1_000_000)
    held = hold(quota, tid, 900_000)
    assert settle(quota, tid, held.reservation.id, 1_200_000).usage.used == 1_200_000
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "$1.20/$1.00"):
        hold(quota, tid, 1)


def test_a_call_across_the_month_end_settles_in_the_month_it_was_held(quota: QuotaHarness) -> None:
    tid = tenant(quota, cost_usd_month=1_000_000)
    quota.clock.advance(timedelta(days=31) - timedelta(seconds=1))  # 2030-01-31T23:59:59
    held = hold(quota, tid, 500_000)
    quota.clock.advance(timedelta(seconds=2))  # February
    settled = settle(quota, tid, held.reservation.id, 200_000)
    assert settled.released and settled.consumed_amount == 200_000
    assert usage(quota, tid)[COST].used == 0  # February's window is untouched
    quota.clock.advance(-timedelta(seconds=2))
    assert usage(quota, tid)[COST].used == 200_000  # January's holds the actual, not the estimate


def test_bad_settlements_are_refused_and_write_nothing(quota: QuotaHarness) -> None:
    tid = tenant(quota, cost_usd_month=1_000_000)
    held = hold(quota, tid, 100_000)
    vm = reserve(quota, tid)
    before = snapshot(quota)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "consume_amount", "must not be negative"):
        settle(quota, tid, held.reservation.id, -1)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "consume_amount", "too large"):
        settle(quota, tid, held.reservation.id, 10**13)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "consume_amount", "vms"):
        settle(quota, tid, vm.reservation.id, 5)
    assert snapshot(quota) == before


def test_cost_reservations_never_over_admit_under_concurrency(quota: QuotaHarness) -> None:
    tid = tenant(quota, cost_usd_month=1_000_000)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda _: attempt(lambda: hold(quota, tid, 100_000)), range(64)))
    admitted, refused = refusals(results)
    assert len(admitted) == 10 and len(refused) == 54
    assert usage(quota, tid)[COST].used == 1_000_000
    assert usage(quota, tid)[VMS].used == 0
