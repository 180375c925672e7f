"""Tenants, listings and isolation between tenants."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import grpc

from swarm.quota.v1 import quota_pb2 as pb
from tests.quota.helpers import TICKETS, VMS, consume, release, reserve, tenant, usage
from tests.support.harness import BACKENDS, QuotaHarness
from tests.support.status import raises_status

pytestmark = BACKENDS

T = TypeVar("T")


def pages(fetch: Callable[[str], tuple[list[T], str]]) -> list[list[T]]:
    """Every page of a listing, following next_page_token."""
    out: list[list[T]] = []
    token = ""
    while True:
        items, token = fetch(token)
        out.append(items)
        if not token:
            return out


def test_create_get_and_update_a_tenant(quota: QuotaHarness) -> None:
    created = quota.stub.CreateTenant(
        pb.CreateTenantRequest(
            tenant_id="acme",
            display_name="Acme Corp",
            plan=pb.PLAN_PRO,
            overrides=[pb.QuotaOverride(resource=TICKETS, limit=0)],
        )
    ).tenant
    assert (created.id, created.display_name, created.plan) == ("acme", "Acme Corp", pb.PLAN_PRO)
    assert created.create_time == created.update_time
    assert quota.stub.GetTenant(pb.GetTenantRequest(tenant_id="acme")).tenant == created
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "Ticket limit reached (0/0 today)"):
        consume(quota, "acme")  # an override of 0 admits nothing
    quota.clock.advance(timedelta(seconds=5))
    renamed = quota.stub.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant_id="acme",
            tenant=pb.Tenant(id="acme", display_name="Acme", plan=pb.PLAN_FREE),
            update_mask={"paths": ["display_name"]},
        )
    ).tenant
    assert (renamed.display_name, renamed.plan) == ("Acme", pb.PLAN_PRO)  # plan not in the mask
    assert renamed.update_time.seconds == created.update_time.seconds + 5
    cleared = quota.stub.UpdateTenant(
        pb.UpdateTenantRequest(tenant_id="acme", update_mask={"paths": ["overrides"]})
    ).tenant
    assert list(cleared.overrides) == []
    assert consume(quota, "acme").usage.limit == 500


def test_service_chooses_an_id_when_none_is_given(quota: QuotaHarness) -> None:
    a = quota.stub.CreateTenant(pb.CreateTenantRequest(display_name="a")).tenant
    b = quota.stub.CreateTenant(pb.CreateTenantRequest(display_name="b")).tenant
    assert a.id and b.id and a.id != b.id


def test_list_tenants_pages_in_id_order_and_filters_by_plan(quota: QuotaHarness) -> None:
    for i in range(7):
        plan = pb.PLAN_FREE if i % 2 else pb.PLAN_ENTERPRISE
        quota.stub.CreateTenant(pb.CreateTenantRequest(tenant_id=f"t{6 - i}", plan=plan))

    def fetch(plan: int) -> Callable[[str], tuple[list[str], str]]:
        def one(token: str) -> tuple[list[str], str]:
            r = quota.stub.ListTenants(pb.ListTenantsRequest(plan=plan, page_size=3, page_token=token))
            return [t.id for t in r.tenants], r.next_page_token

        return one

    assert pages(fetch(0)) == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]]
    assert sum(pages(fetch(pb.PLAN_FREE)), []) == ["t1", "t3", "t5"]
    token = quota.stub.ListTenants(pb.ListTenantsRequest(page_size=1)).next_page_token
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "page_token", "different query"):
        quota.stub.ListTenants(pb.ListTenantsRequest(plan=pb.PLAN_FREE, page_token=token))


def test_list_reservations_pages_live_ones_oldest_first_and_filters_by_owner(quota: QuotaHarness) -> None:
    tid = tenant(quota, vms=10)
    held = []
    for i in range(6):
        quota.clock.advance(timedelta(seconds=1))
        held.append(reserve(quota, tid, owner=f"vmhost/{i % 2}").reservation.id)
    release(quota, tid, held[2])

    def fetch(owner: str) -> Callable[[str], tuple[list[str], str]]:
        def one(token: str) -> tuple[list[str], str]:
            r = quota.stub.ListReservations(
                pb.ListReservationsRequest(tenant_id=tid, owner=owner, page_size=2, page_token=token)
            )
            return [x.id for x in r.reservations], r.next_page_token

        return one

    assert sum(pages(fetch("")), []) == [held[0], held[1], held[3], held[4], held[5]]
    assert sum(pages(fetch("vmhost/0")), []) == [held[0], held[4]]
    only_vms = quota.stub.ListReservations(pb.ListReservationsRequest(tenant_id=tid, resource=VMS))
    assert len(only_vms.reservations) == 5
    none = quota.stub.ListReservations(pb.ListReservationsRequest(tenant_id=tid, resource=TICKETS))
    assert list(none.reservations) == []


def test_list_api_keys_pages(quota: QuotaHarness) -> None:
    tid = tenant(quota)
    ids = [quota.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id=tid)).api_key.id for _ in range(5)]

    def one(token: str) -> tuple[list[str], str]:
        r = quota.stub.ListApiKeys(pb.ListApiKeysRequest(tenant_id=tid, page_size=2, page_token=token))
        return [k.id for k in r.api_keys], r.next_page_token

    listed = pages(one)
    assert [len(p) for p in listed] == [2, 2, 1] and sorted(sum(listed, [])) == sorted(ids)


def test_another_tenants_objects_are_invisible(quota: QuotaHarness) -> None:
    a, b = tenant(quota), tenant(quota)
    held = reserve(quota, a)
    consume(quota, a, 3)
    key = quota.stub.CreateApiKey(pb.CreateApiKeyRequest(tenant_id=a)).api_key
    with raises_status(grpc.StatusCode.NOT_FOUND, "reservation"):
        release(quota, b, held.reservation.id)
    with raises_status(grpc.StatusCode.NOT_FOUND, "API key"):
        quota.stub.RevokeApiKey(pb.RevokeApiKeyRequest(tenant_id=b, api_key_id=key.id))
    assert list(quota.stub.ListReservations(pb.ListReservationsRequest(tenant_id=b)).reservations) == []
    assert list(quota.stub.ListApiKeys(pb.ListApiKeysRequest(tenant_id=b)).api_keys) == []
    assert usage(quota, b)[VMS].used == 0 and usage(quota, b)[TICKETS].used == 0
    assert usage(quota, a)[VMS].used == 1 and usage(quota, a)[TICKETS].used == 3
