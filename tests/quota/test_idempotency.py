"""Request ids (AIP-155): a retry returns the first answer and charges nothing twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc

from swarm.quota.v1 import quota_pb2 as pb
from tests.quota.helpers import VMS, consume, release, reserve, tenant, usage
from tests.support.harness import BACKENDS, QuotaHarness
from tests.support.status import attempt, raises_status, refusals

pytestmark = BACKENDS


def test_a_repeated_request_id_is_counted_once(quota: QuotaHarness) -> None:
    tid = tenant(quota, tickets_per_day=100)
    first = consume(quota, tid, 7, request_id="charge-1")
    again = consume(quota, tid, 7, request_id="charge-1")
    assert first.usage == again.usage and again.usage.used == 7
    assert consume(quota, tid, 1).usage.used == 8
    held = reserve(quota, tid, request_id="vm-1")
    assert reserve(quota, tid, request_id="vm-1").reservation == held.reservation
    assert usage(quota, tid)[VMS].used == 1


def test_concurrent_duplicates_at_the_limit_all_get_the_first_answer(quota: QuotaHarness) -> None:
    # The first charge fills the window: a duplicate that charged again would
    # be refused instead of replaying the success.
    tid = tenant(quota, tickets_per_day=10, vms=1)
    consume(quota, tid, 5)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: attempt(lambda: consume(quota, tid, 5, request_id="c")), range(16)))
    ok, refused = refusals(results)
    assert refused == [] and {r.usage.used for r in ok} == {10}
    with ThreadPoolExecutor(16) as pool:
        held = list(pool.map(lambda _: attempt(lambda: reserve(quota, tid, request_id="vm")), range(16)))
    ok_held, refused = refusals(held)
    assert refused == [] and len({h.reservation.id for h in ok_held}) == 1
    assert usage(quota, tid)[VMS].used == 1


def test_concurrent_distinct_and_repeated_ids_charge_once_per_id(quota: QuotaHarness) -> None:
    tid = tenant(quota, tickets_per_day=1000)
    ids = [f"r{i % 10}" for i in range(60)]
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda rid: consume(quota, tid, 3, request_id=rid), ids))
    assert usage(quota, tid)[pb.RESOURCE_TICKETS_PER_DAY].used == 30


def test_a_refused_consume_is_replayed_as_a_refusal(quota: QuotaHarness) -> None:
    # ConsumeRequest.request_id: "returns the first answer (including a rejection)".
    tid = tenant(quota, tickets_per_day=2)
    consume(quota, tid, 2)
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "Ticket limit reached (2/2 today)"):
        consume(quota, tid, 1, request_id="late")
    quota.clock.advance(timedelta(days=1))  # a fresh window
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "Ticket limit reached (2/2 today)"):
        consume(quota, tid, 1, request_id="late")
    assert usage(quota, tid)[pb.RESOURCE_TICKETS_PER_DAY].used == 0
    assert consume(quota, tid, 1, request_id="fresh").usage.used == 1


def test_a_refused_reserve_is_not_recorded(quota: QuotaHarness) -> None:
    # ReserveRequest.request_id promises the same reservation, not the same
    # refusal: once a VM ends, the holder's retry is admitted.
    tid = tenant(quota, vms=1)
    first = reserve(quota, tid)
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "VM limit reached (1/1)"):
        reserve(quota, tid, request_id="agent-7")
    release(quota, tid, first.reservation.id)
    held = reserve(quota, tid, request_id="agent-7")
    assert reserve(quota, tid, request_id="agent-7").reservation.id == held.reservation.id


def test_request_ids_are_scoped_by_tenant(quota: QuotaHarness) -> None:
    a, b = tenant(quota), tenant(quota)
    consume(quota, a, 3, request_id="same")
    assert consume(quota, b, 4, request_id="same").usage.used == 4


def test_create_tenant_retry_returns_the_tenant_and_others_get_already_exists(quota: QuotaHarness) -> None:
    def create(request_id: str) -> pb.CreateTenantResponse:
        return quota.stub.CreateTenant(
            pb.CreateTenantRequest(tenant_id="acme", plan=pb.PLAN_PRO, request_id=request_id)
        )

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: attempt(lambda: create("create-acme")), range(8)))
    ok, refused = refusals(results)
    assert refused == [] and {r.tenant.id for r in ok} == {"acme"}
    with raises_status(grpc.StatusCode.ALREADY_EXISTS, "tenant acme already exists"):
        create("another")
    with raises_status(grpc.StatusCode.ALREADY_EXISTS):
        create("")


def test_create_api_key_retry_returns_the_key_without_its_secret(quota: QuotaHarness) -> None:
    tid = tenant(quota)

    def create() -> pb.CreateApiKeyResponse:
        return quota.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id=tid, request_id="key-1"))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: attempt(create), range(8)))
    ok, refused = refusals(results)
    assert refused == [] and len({r.api_key.id for r in ok}) == 1
    assert sum(1 for r in ok if r.secret) == 1  # shown once
    assert create().secret == ""
    listed = quota.stub.ListApiKeys(pb.ListApiKeysRequest(tenant_id=tid)).api_keys
    assert len(listed) == 1
