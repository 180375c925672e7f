"""The tracked LLM client: the real anthropic SDK against a local Messages-API
server, a real telemetry service and a real quota service."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import anthropic
import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.telemetry.v1 import telemetry_pb2 as tpb
from swarmagent.llm import Attribution, TrackedLLM
from swarmcommon.clients import TelemetryClient
from swarmcommon.errors import QuotaExceeded, SwarmError
from swarmcommon.localproc import free_port
from swarmdemo.messages_server import MessagesServer, Reply
from tests.support.harness import BACKENDS, QuotaHarness, TelemetryHarness, start_telemetry

pytestmark = BACKENDS
MODEL = "claude-sonnet-4-6"


@pytest.fixture
def llm_server() -> Iterator[MessagesServer]:
    with MessagesServer(
        lambda body: Reply("def add(a, b):\n    return a + b\n", cache_read_input_tokens=40)
    ) as s:
        yield s


@pytest.fixture
def telemetry(db: str, quota: QuotaHarness) -> Iterator[TelemetryHarness]:
    harness = start_telemetry(db, quota_target=quota.target)
    try:
        yield harness
    finally:
        harness.channel.close()
        harness.app.stop(grace=1)


Tracked = Callable[..., TrackedLLM]


@pytest.fixture
def tracked(llm_server: MessagesServer) -> Iterator[Tracked]:
    """TrackedLLMs against the Messages server, closed (usage flushed) after the test."""
    made: list[tuple[TrackedLLM, TelemetryClient]] = []

    def make(target: str, attribution: Attribution, timeout: float = 10.0) -> TrackedLLM:
        ledger = TelemetryClient(target, default_timeout=timeout)
        llm = TrackedLLM(_client(llm_server), ledger, attribution)
        made.append((llm, ledger))
        return llm

    yield make
    for llm, ledger in made:
        llm.close()
        ledger.close()


def _tenant(quota: QuotaHarness, budget: int | None = None) -> str:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    overrides = (
        [qpb.QuotaOverride(resource=qpb.RESOURCE_COST_USD_MONTH, limit=budget)] if budget is not None else []
    )
    quota.stub.CreateTenant(qpb.CreateTenantRequest(tenant_id=tenant, plan=qpb.PLAN_PRO, overrides=overrides))
    return tenant


def _client(server: MessagesServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="sk-test", max_retries=0)


def _ask(llm: TrackedLLM, text: str = "Write add()") -> anthropic.types.Message:
    return llm.create(model=MODEL, max_tokens=256, messages=[{"role": "user", "content": text}])


def test_a_call_is_traced_and_recorded_in_the_ledger(
    llm_server: MessagesServer,
    telemetry: TelemetryHarness,
    quota: QuotaHarness,
    spans: InMemorySpanExporter,
    tracked: Tracked,
) -> None:
    tenant = _tenant(quota)
    llm = tracked(telemetry.target, Attribution(tenant, "coder-1", "coder", "p1", "t1"))
    reply = _ask(llm)
    assert reply.content[0].text.startswith("def add")  # type: ignore[union-attr]
    assert len(llm_server.requests) == 1

    summary = telemetry.stub.GetUsageSummary(
        tpb.GetUsageSummaryRequest(tenant_id=tenant, group_by=tpb.USAGE_GROUP_BY_TICKET)
    )
    (row,) = summary.rows
    assert row.key == "t1" and row.totals.request_count == 1
    assert row.totals.input_tokens == reply.usage.input_tokens
    assert row.totals.output_tokens == reply.usage.output_tokens
    assert row.totals.cache_read_input_tokens == 40
    expected = reply.usage.input_tokens * 3 + reply.usage.output_tokens * 15 + round(40 * 0.3)
    assert row.totals.cost_usd_micros == expected

    ours = [
        s for s in spans.get_finished_spans() if (s.attributes or {}).get("gen_ai.response.id") == reply.id
    ]
    span = next(s for s in ours if s.name == f"chat {MODEL}")
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.request.model"] == MODEL and attrs["gen_ai.response.id"] == reply.id
    assert attrs["gen_ai.usage.input_tokens"] == reply.usage.input_tokens + 40  # cached ones included
    assert attrs["gen_ai.usage.output_tokens"] == reply.usage.output_tokens
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 40
    assert attrs["swarm.ticket_id"] == "t1"
    assert [e.name for e in span.events] == ["prompt_sent", "response_received"]
    sent, received = span.events
    # The seed's "prompt_sent (2.5k tokens)": the prompt's size, at the time it was sent.
    assert (sent.attributes or {})["tokens"] == reply.usage.input_tokens + 40
    assert (received.attributes or {})["tokens"] == reply.usage.output_tokens
    assert span.start_time is not None and span.start_time <= sent.timestamp <= received.timestamp


def test_an_exhausted_budget_refuses_before_the_call_is_sent(
    llm_server: MessagesServer, telemetry: TelemetryHarness, quota: QuotaHarness, tracked: Tracked
) -> None:
    tenant = _tenant(quota, budget=100)  # a hundred micro-dollars
    llm = tracked(telemetry.target, Attribution(tenant, "coder-1", "coder"))
    _ask(llm, "x" * 400)  # more than the budget: it was already spent, so it is recorded in full
    assert len(llm_server.requests) == 1
    with pytest.raises(QuotaExceeded) as refused:
        _ask(llm)
    assert refused.value.resource == "cost_usd_month" and refused.value.limit == 100
    assert "no call was made" in refused.value.message
    assert len(llm_server.requests) == 1  # the Messages server saw nothing more


def test_no_telemetry_no_call(llm_server: MessagesServer, db: str, tracked: Tracked) -> None:
    llm = tracked(f"127.0.0.1:{free_port()}", Attribution("acme"), timeout=2)
    with pytest.raises(SwarmError) as refused:
        _ask(llm)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert llm_server.requests == []
