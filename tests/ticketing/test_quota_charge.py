"""Creating a project charges `tickets_per_day` in a real quota service: only
for a valid project, all or nothing, and once per request_id."""

from __future__ import annotations

import uuid

import grpc

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.ticketing.v1 import ticketing_pb2 as pb
from tests.support.harness import BACKENDS, QuotaHarness, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import snapshot, spec

pytestmark = BACKENDS

Charged = tuple[QuotaHarness, TicketingHarness]


def _tenant(quota: QuotaHarness, tickets_per_day: int = 100) -> str:
    tid = f"t-{uuid.uuid4().hex[:8]}"
    limit = qpb.QuotaOverride(resource=qpb.RESOURCE_TICKETS_PER_DAY, limit=tickets_per_day)
    quota.stub.CreateTenant(qpb.CreateTenantRequest(tenant_id=tid, plan=qpb.PLAN_PRO, overrides=[limit]))
    return tid


def _tickets_used(quota: QuotaHarness, tid: str) -> int:
    usages = quota.stub.GetUsage(qpb.GetUsageRequest(tenant_id=tid)).usages
    return next(u.used for u in usages if u.resource == qpb.RESOURCE_TICKETS_PER_DAY)


def _create(
    ticketing: TicketingHarness, tid: str, tickets: list[pb.TicketSpec], request_id: str = ""
) -> object:
    return ticketing.stub.CreateProject(
        pb.CreateProjectRequest(tenant_id=tid, name="p", tickets=tickets, request_id=request_id)
    )


def test_a_duplicate_dependency_is_refused_before_anything_is_charged(charged: Charged) -> None:
    quota, ticketing = charged
    tid = _tenant(quota)
    before = snapshot(ticketing)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "tickets[1].depends_on[1]", "'a'"):
        _create(ticketing, tid, [spec("a"), spec("b", depends_on=["a", "a"])], request_id="dup-deps")
    assert _tickets_used(quota, tid) == 0
    assert snapshot(ticketing) == before


def test_every_invalid_spec_is_refused_before_the_charge(charged: Charged) -> None:
    quota, ticketing = charged
    tid = _tenant(quota)
    bad = [
        ([spec("a", depends_on=["ghost"])], "tickets[0].depends_on[0]"),
        ([spec("a", depends_on=["a"])], "tickets[0].depends_on[0]"),
        ([spec("a"), spec("a")], "tickets[1].key"),
        ([spec("a", depends_on=["b"]), spec("b", depends_on=["a"])], "dependency cycle"),
    ]
    for tickets, fragment in bad:
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT, fragment):
            _create(ticketing, tid, tickets)
    assert _tickets_used(quota, tid) == 0


def test_a_refused_charge_writes_nothing(charged: Charged) -> None:
    quota, ticketing = charged
    tid = _tenant(quota, tickets_per_day=2)
    before = snapshot(ticketing)
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "Ticket limit reached (0/2 today)"):
        _create(ticketing, tid, [spec("a"), spec("b"), spec("c")])
    assert snapshot(ticketing) == before
    assert _tickets_used(quota, tid) == 0


def test_a_128_character_request_id_is_charged_once(charged: Charged) -> None:
    # Ticketing derives quota's request id from the caller's; the caller may
    # use all 128 characters, so the derived one must still fit quota's limit.
    quota, ticketing = charged
    tid = _tenant(quota)
    request_id = "create-" + "x" * 121
    assert len(request_id) == 128
    first = _create(ticketing, tid, [spec("a"), spec("b"), spec("c")], request_id=request_id)
    assert _tickets_used(quota, tid) == 3
    before = snapshot(ticketing)
    again = _create(ticketing, tid, [spec("a"), spec("b"), spec("c")], request_id=request_id)
    assert again == first
    assert _tickets_used(quota, tid) == 3
    assert snapshot(ticketing) == before


def test_request_ids_differing_only_past_the_prefix_are_charged_apart(charged: Charged) -> None:
    quota, ticketing = charged
    tid = _tenant(quota)
    for suffix in "ab":
        _create(ticketing, tid, [spec("a")], request_id="r" * 127 + suffix)
    assert _tickets_used(quota, tid) == 2
