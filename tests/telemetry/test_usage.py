"""The cost ledger: published prices, replays counted once, summaries that add
up, unknown models flagged, budgets from the tenant's quota."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.telemetry.v1 import telemetry_pb2 as pb
from tests.support.harness import BACKENDS, QuotaHarness, TelemetryHarness, start_telemetry
from tests.support.status import attempt, raises_status, refusals
from tests.telemetry.helpers import usage_rows

pytestmark = BACKENDS


def _ts(when: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when)
    return out


def record(h: TelemetryHarness, tenant: str = "acme", **kw: Any) -> pb.UsageRecord:
    fields: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "tenant_id": tenant,
        "provider": "anthropic",
        "model": "claude-sonnet-4-6",
        "request_type": "coder",
        **kw,
    }
    return h.stub.RecordUsage(pb.RecordUsageRequest(**fields)).record


# (model, input, output, cache write, cache read) -> micro-dollars, worked out by
# hand from the published $/MTok: a dollar per million tokens is one micro-dollar
# per token.
PRICED = [
    ("claude-sonnet-4-5", 1_000_000, 0, 0, 0, 3_000_000),
    ("claude-sonnet-4-5-20250929", 2_500, 1_200, 0, 0, 2_500 * 3 + 1_200 * 15),
    ("claude-sonnet-4-20250514", 1000, 1000, 1000, 1000, 3000 + 15000 + 3750 + 300),
    ("claude-opus-4-5", 10_000, 2_000, 4_000, 50_000, 50_000 + 50_000 + 25_000 + 25_000),
    ("claude-opus-4-1-20250805", 100, 100, 0, 0, 1500 + 7500),
    (
        "claude-haiku-4-5",
        1_000_000,
        1_000_000,
        1_000_000,
        1_000_000,
        1_000_000 + 5_000_000 + 1_250_000 + 100_000,
    ),
    ("claude-3-5-haiku-latest", 1000, 1000, 1000, 1000, 800 + 4000 + 1000 + 80),
    ("claude-3-haiku-20240307", 3, 0, 0, 0, 1),  # 0.75 rounds half up to 1
    ("claude-3-7-sonnet-20250219", 0, 1, 0, 0, 15),
    ("claude-opus-4-8", 1000, 1000, 0, 0, 5000 + 25000),
    ("claude-sonnet-4-6", 1000, 0, 0, 1000, 3000 + 300),
    ("claude-sonnet-5-5", 1000, 1000, 1000, 1000, 2000 + 10000 + 2500 + 100),
    ("claude-opus-5-5", 1000, 1000, 0, 0, 4000 + 20000),
    ("claude-fable-5-1", 1000, 1000, 1000, 1000, 10000 + 50000 + 12500 + 250),
    ("claude-mythos-5", 0, 0, 0, 1000, 1000),
    # Haiku 5.5 is tiered by prompt size: up to 100k tokens, then the long-prompt price.
    ("claude-haiku-5-5", 100_000, 1000, 0, 0, 10_000 + 500),
    ("claude-haiku-5-5", 100_001, 1000, 0, 0, 50_001 + 2500),  # 50,000.5 rounds half up
]


@pytest.mark.parametrize(("model", "inp", "out", "cw", "cr", "micros"), PRICED)
def test_cost_is_the_published_price(
    telemetry: TelemetryHarness, model: str, inp: int, out: int, cw: int, cr: int, micros: int
) -> None:
    r = record(
        telemetry,
        model=model,
        input_tokens=inp,
        output_tokens=out,
        cache_creation_input_tokens=cw,
        cache_read_input_tokens=cr,
    )
    assert r.cost_usd_micros == micros and not r.unknown_model
    assert r.price_version.startswith("anthropic-")


def test_unknown_models_are_recorded_and_flagged_never_priced_by_guess(telemetry: TelemetryHarness) -> None:
    for model in ("claude-opus-4-9", "claude-fable-5-2", "gpt-5", "claude-sonnet-4-5-preview"):
        r = record(telemetry, model=model, input_tokens=10, output_tokens=10)
        assert r.unknown_model and r.cost_usd_micros == 0, model
    r = record(telemetry, provider="other", model="claude-sonnet-4-5", input_tokens=10)
    assert r.unknown_model
    total = telemetry.stub.GetUsageSummary(
        pb.GetUsageSummaryRequest(tenant_id="acme", group_by=pb.USAGE_GROUP_BY_MODEL)
    ).total
    assert total.unknown_model_count == 5 and total.request_count == 5 and total.input_tokens == 50


def test_a_retried_record_returns_the_first_answer_and_writes_nothing_new(
    telemetry: TelemetryHarness,
) -> None:
    first = record(telemetry, request_id="msg_01", input_tokens=1000, output_tokens=100)
    written = usage_rows(telemetry)
    again = record(telemetry, request_id="msg_01", input_tokens=1000, output_tokens=100)
    assert again == first
    assert usage_rows(telemetry) == written
    # A client that buffered the record may stamp its retry with the call's time.
    stamped = record(
        telemetry,
        request_id="msg_01",
        input_tokens=1000,
        output_tokens=100,
        usage_time=_ts(datetime.now(UTC)),
    )
    assert stamped == first and usage_rows(telemetry) == written
    total = telemetry.stub.GetUsageSummary(
        pb.GetUsageSummaryRequest(tenant_id="acme", group_by=pb.USAGE_GROUP_BY_MODEL)
    ).total
    assert total.request_count == 1 and total.cost_usd_micros == first.cost_usd_micros
    # The same request id from another tenant is another record.
    assert record(telemetry, "other", request_id="msg_01", input_tokens=1).id != first.id


# What a reused request_id changed (a real retry changes none of these).
REUSES: list[dict[str, Any]] = [
    {"input_tokens": 999_999},
    {"output_tokens": 101},
    {"cache_read_input_tokens": 5},
    {"model": "claude-opus-4-5"},
    {"provider": "other"},
    {"ticket_id": "t-2"},
    {"project_id": "p-2"},
    {"agent_id": "coder-9"},
    {"request_type": "reviewer"},
]


def test_a_request_id_reused_for_another_call_is_refused_and_writes_nothing(
    telemetry: TelemetryHarness,
) -> None:
    for i, changed in enumerate(REUSES):
        call: dict[str, Any] = {"request_id": f"msg_{i}", "input_tokens": 1000, "output_tokens": 100}
        first = record(telemetry, **call)
        written = usage_rows(telemetry)
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id", f"msg_{i}", "already used"):
            record(telemetry, **{**call, **changed})
        assert usage_rows(telemetry) == written, changed
        assert record(telemetry, **call) == first, changed  # the real retry still gets its answer


def test_concurrent_calls_with_one_request_id_store_one_record(telemetry: TelemetryHarness) -> None:
    """Retries racing each other, and a different call racing them with the
    same request_id: one record, every success is that record, every
    refusal names the request_id."""
    calls = [{"input_tokens": 1000} if i % 2 else {"input_tokens": 2000} for i in range(12)]
    with ThreadPoolExecutor(len(calls)) as pool:
        outcomes = list(
            pool.map(lambda kw: attempt(lambda: record(telemetry, request_id="race", **kw)), calls)
        )
    stored, refused = refusals(outcomes)
    assert len(usage_rows(telemetry)) == 1
    assert stored and len({r.id for r in stored}) == 1
    assert all(r == stored[0] for r in stored)
    for err in refused:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in err.details()
    winner_tokens = stored[0].input_tokens
    assert len(stored) == sum(1 for kw in calls if kw["input_tokens"] == winner_tokens)


def test_summaries_add_up_across_every_grouping(telemetry: TelemetryHarness) -> None:
    now = datetime.now(UTC)
    calls = [
        ("p1", "t1", "coder", "claude-sonnet-4-5", 0),
        ("p1", "t1", "reviewer", "claude-haiku-4-5", 0),
        ("p1", "t2", "coder", "claude-opus-4-5", 1),
        ("p2", "t3", "judge", "claude-sonnet-4-5", 2),
        ("p2", "t3", "coder", "mystery-model", 2),
        ("", "", "clarifier", "claude-haiku-4-5", 3),
    ]
    for i, (project, ticket, kind, model, days_ago) in enumerate(calls):
        record(
            telemetry,
            project_id=project,
            ticket_id=ticket,
            request_type=kind,
            model=model,
            input_tokens=1000 * (i + 1),
            output_tokens=100 * (i + 1),
            cache_read_input_tokens=10 * i,
            usage_time=_ts(now - timedelta(days=days_ago, minutes=1)),
        )
    record(telemetry, "other", model="claude-opus-4-5", input_tokens=10**6)  # never counted for acme
    start = now - timedelta(days=10)
    totals = []
    for group in (
        pb.USAGE_GROUP_BY_PROJECT,
        pb.USAGE_GROUP_BY_TICKET,
        pb.USAGE_GROUP_BY_AGENT_TYPE,
        pb.USAGE_GROUP_BY_MODEL,
        pb.USAGE_GROUP_BY_DAY,
        pb.USAGE_GROUP_BY_MONTH,
    ):
        reply = telemetry.stub.GetUsageSummary(
            pb.GetUsageSummaryRequest(tenant_id="acme", group_by=group, start_time=_ts(start))
        )
        rows = list(reply.rows)
        for field in (
            "request_count",
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cost_usd_micros",
        ):
            assert sum(getattr(r.totals, field) for r in rows) == getattr(reply.total, field), (group, field)
        assert abs(sum(r.share_of_cost for r in rows) - 1.0) < 1e-9
        totals.append(reply.total)
        if group in (pb.USAGE_GROUP_BY_DAY, pb.USAGE_GROUP_BY_MONTH):
            assert [r.key for r in rows] == sorted(r.key for r in rows)  # time order
        else:
            costs = [r.totals.cost_usd_micros for r in rows]
            assert costs == sorted(costs, reverse=True)  # by cost
    assert all(t == totals[0] for t in totals)
    assert totals[0].request_count == 6 and totals[0].unknown_model_count == 1

    by_project = telemetry.stub.GetUsageSummary(
        pb.GetUsageSummaryRequest(tenant_id="acme", group_by=pb.USAGE_GROUP_BY_PROJECT, start_time=_ts(start))
    )
    assert {r.key for r in by_project.rows} == {"p1", "p2", ""}
    days = telemetry.stub.GetUsageSummary(
        pb.GetUsageSummaryRequest(tenant_id="acme", group_by=pb.USAGE_GROUP_BY_DAY, start_time=_ts(start))
    )
    assert {r.key for r in days.rows} == {
        (now - timedelta(days=d, minutes=1)).strftime("%Y-%m-%d") for d in range(4)
    }
    only_p2 = telemetry.stub.GetUsageSummary(
        pb.GetUsageSummaryRequest(
            tenant_id="acme", group_by=pb.USAGE_GROUP_BY_TICKET, start_time=_ts(start), project_id="p2"
        )
    )
    assert [r.key for r in only_p2.rows] == ["t3"] and only_p2.total.request_count == 2
    # Paging: every row once.
    keys, token = [], ""
    while True:
        page = telemetry.stub.GetUsageSummary(
            pb.GetUsageSummaryRequest(
                tenant_id="acme",
                group_by=pb.USAGE_GROUP_BY_AGENT_TYPE,
                start_time=_ts(start),
                page_size=2,
                page_token=token,
            )
        )
        keys += [r.key for r in page.rows]
        token = page.next_page_token
        if not token:
            break
    assert sorted(keys) == ["clarifier", "coder", "judge", "reviewer"]
    # Another tenant sees none of it.
    other = telemetry.stub.GetUsageSummary(
        pb.GetUsageSummaryRequest(tenant_id="nobody", group_by=pb.USAGE_GROUP_BY_MODEL, start_time=_ts(start))
    )
    assert list(other.rows) == [] and other.total.request_count == 0


def test_bad_usage_input_is_refused_and_nothing_is_stored(telemetry: TelemetryHarness) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"request_id": ""}, "request_id"),
        ({"output_tokens": 10**12 + 1}, "output_tokens"),
        ({"project_id": "p" * 65}, "project_id"),
        ({"model": ""}, "model"),
        ({"input_tokens": -1}, "input_tokens"),
        ({"cache_read_input_tokens": -5}, "cache_read_input_tokens"),
        ({"request_type": "wizard"}, "request_type"),
        ({"tenant_id": ""}, "tenant_id"),
    ]
    for overrides, field in cases:
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT, field):
            record(telemetry, **overrides)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "group_by"):
        telemetry.stub.GetUsageSummary(pb.GetUsageSummaryRequest(tenant_id="acme"))
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "group_by", "99"):
        bad_group = pb.GetUsageSummaryRequest(tenant_id="acme", group_by=99)  # type: ignore[arg-type]
        telemetry.stub.GetUsageSummary(bad_group)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "estimated_cost_usd_micros"):
        telemetry.stub.CheckBudget(pb.CheckBudgetRequest(tenant_id="acme", estimated_cost_usd_micros=-1))
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "end_time"):
        now = datetime.now(UTC)
        telemetry.stub.GetUsageSummary(
            pb.GetUsageSummaryRequest(
                tenant_id="acme",
                group_by=pb.USAGE_GROUP_BY_DAY,
                start_time=_ts(now),
                end_time=_ts(now - timedelta(days=1)),
            )
        )
    total = telemetry.stub.GetUsageSummary(
        pb.GetUsageSummaryRequest(tenant_id="acme", group_by=pb.USAGE_GROUP_BY_MODEL)
    ).total
    assert total.request_count == 0 and usage_rows(telemetry) == []


@pytest.fixture
def budgeted(db: str, quota: QuotaHarness) -> Iterator[TelemetryHarness]:
    """Telemetry charging a real quota service."""
    harness = start_telemetry(db, quota_target=quota.target)
    try:
        yield harness
    finally:
        harness.channel.close()
        harness.app.stop(grace=1)


def _tenant(quota: QuotaHarness, budget_micros: int | None) -> str:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    overrides = (
        [qpb.QuotaOverride(resource=qpb.RESOURCE_COST_USD_MONTH, limit=budget_micros)]
        if budget_micros is not None
        else []
    )
    quota.stub.CreateTenant(qpb.CreateTenantRequest(tenant_id=tenant, plan=qpb.PLAN_PRO, overrides=overrides))
    return tenant


def test_budget_is_the_tenants_monthly_cost_quota(budgeted: TelemetryHarness, quota: QuotaHarness) -> None:
    tenant = _tenant(quota, 50_000)  # five cents
    check = budgeted.stub.CheckBudget(pb.CheckBudgetRequest(tenant_id=tenant))
    assert check.allowed and check.limit_usd_micros == 50_000 and check.remaining_usd_micros == 50_000
    assert not budgeted.stub.CheckBudget(
        pb.CheckBudgetRequest(tenant_id=tenant, estimated_cost_usd_micros=60_000)
    ).allowed
    r = record(budgeted, tenant, input_tokens=10_000, output_tokens=2_000)  # 30,000 + 30,000
    assert r.cost_usd_micros == 60_000
    check = budgeted.stub.CheckBudget(pb.CheckBudgetRequest(tenant_id=tenant))
    assert not check.allowed and check.spent_usd_micros == 60_000 and check.remaining_usd_micros == 0
    assert check.reset_time.ToDatetime(tzinfo=UTC).day == 1
    # The spend went to quota too (with overage: it was already spent), once.
    written = usage_rows(budgeted)
    again = record(budgeted, tenant, request_id=r.request_id, input_tokens=10_000, output_tokens=2_000)
    assert again == r and usage_rows(budgeted) == written
    usage = {u.resource: u for u in quota.stub.GetUsage(qpb.GetUsageRequest(tenant_id=tenant)).usages}
    assert usage[qpb.RESOURCE_COST_USD_MONTH].used == 60_000


def test_no_cost_limit_means_unlimited(budgeted: TelemetryHarness, quota: QuotaHarness) -> None:
    tenant = _tenant(quota, None)
    record(budgeted, tenant, model="claude-opus-4-1", input_tokens=10**6)
    check = budgeted.stub.CheckBudget(
        pb.CheckBudgetRequest(tenant_id=tenant, estimated_cost_usd_micros=10**9)
    )
    assert check.allowed and check.unlimited and check.spent_usd_micros == 15_000_000
    with raises_status(grpc.StatusCode.NOT_FOUND):
        budgeted.stub.CheckBudget(pb.CheckBudgetRequest(tenant_id="no-such-tenant"))


def test_any_request_id_the_ledger_takes_is_charged_to_quota_once(
    budgeted: TelemetryHarness, quota: QuotaHarness
) -> None:
    """A provider's message id, one with characters quota's own ids may not
    hold, and the longest RecordUsage takes (longer than quota's limit)."""
    for request_id in ("msg_01XFDUDYJgAACzvnptvVoYEL", "call 7/attempt:1", "r" * 200):
        tenant = _tenant(quota, None)
        first = record(budgeted, tenant, request_id=request_id, input_tokens=1000)
        assert record(budgeted, tenant, request_id=request_id, input_tokens=1000) == first
        usage = {u.resource: u for u in quota.stub.GetUsage(qpb.GetUsageRequest(tenant_id=tenant)).usages}
        assert first.cost_usd_micros == 3000 and usage[qpb.RESOURCE_COST_USD_MONTH].used == 3000, request_id


def test_a_reused_request_id_charges_quota_nothing(budgeted: TelemetryHarness, quota: QuotaHarness) -> None:
    tenant = _tenant(quota, None)
    record(budgeted, tenant, request_id="msg_03", input_tokens=1000)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id"):
        record(budgeted, tenant, request_id="msg_03", input_tokens=5000)
    usage = {u.resource: u for u in quota.stub.GetUsage(qpb.GetUsageRequest(tenant_id=tenant)).usages}
    assert usage[qpb.RESOURCE_COST_USD_MONTH].used == 3000
