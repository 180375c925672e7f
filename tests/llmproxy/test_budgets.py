"""Budgets through the LLM proxy: a call is held against the tenant's
monthly budget in quota before it reaches the provider, refused with an
Anthropic-style 429 when the hold does not fit, and settled to the actual
cost however the guest behaves."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import pytest
import sqlalchemy as sa

from swarm_quota.tables import reservations
from swarm_telemetry.domain import UsageRecord
from swarm_telemetry.prices import price_of
from swarm_telemetry.proxy.budget import OWNER
from swarm_telemetry.proxy.estimate import estimate
from swarm_telemetry.proxy.settle import Call
from tests.llmproxy.helpers import INPUT, MODEL, OUTPUT, LlmBench, prompt
from tests.llmproxy.upstream import text_tokens
from tests.support.harness import BACKENDS
from tests.support.waiting import eventually


def test_a_tenant_over_budget_is_refused_before_the_upstream(llm: LlmBench) -> None:
    actual = text_tokens({"messages": prompt(40)}) * INPUT + 120 * OUTPUT  # what each call costs
    tid = llm.tenant(budget_usd_micros=3 * actual + 100)
    guest = llm.guest(llm.token(tid), max_retries=2)  # the refusal tells the SDK not to retry
    for _ in range(3):  # estimates: 150 output tokens (max_tokens), then the p90 of history (120)
        guest.messages.create(model=MODEL, max_tokens=150, messages=prompt(40))  # type: ignore[arg-type]
    spent = llm.spent(tid)
    assert spent == 3 * actual
    seen = len(llm.upstream.messages())

    with httpx.Client(base_url=llm.url, timeout=30) as raw:
        for _ in range(3):
            refused = raw.post(
                "/v1/messages",
                headers={"x-api-key": llm.token(tid)},
                json={"model": MODEL, "max_tokens": 150, "messages": prompt(40)},
            )
            assert refused.status_code == 429
    body = refused.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    message = body["error"]["message"]
    assert "Monthly LLM cost budget (cost_usd_month)" in message and tid in message
    assert "resets at 2030-02-01T00:00:00Z" in message  # quota's clock: January 2030
    assert refused.headers["x-should-retry"] == "false" and int(refused.headers["retry-after"]) > 0

    with pytest.raises(anthropic.RateLimitError) as caught:
        guest.messages.create(model=MODEL, max_tokens=150, messages=prompt(40))  # type: ignore[arg-type]
    assert "resets at 2030-02-01" in caught.value.message
    assert len(llm.upstream.messages()) == seen  # the upstream saw none of the refused calls
    assert llm.spent(tid) == spent and llm.live_holds(tid) == 0


@BACKENDS
def test_concurrent_calls_never_spend_past_the_budget_by_more_than_one_estimate_error(llm: LlmBench) -> None:
    """64 calls at once against a budget that fits 10: holds are admitted by
    quota's atomic check, so at most 10 reach the provider, and what is spent
    is what the provider reported."""
    b = llm.upstream.behaviour
    b.output_tokens, b.delay_seconds = 300, 0.3  # calls overlap
    messages = prompt(2000)
    actual = text_tokens({"messages": messages}) * INPUT + 300 * OUTPUT
    warmup = 3  # history for the p90 output estimate (300 tokens, not max_tokens)
    tid = llm.tenant(budget_usd_micros=warmup * actual + 10 * actual + actual // 2)
    guest = llm.guest(llm.token(tid))
    for _ in range(warmup):
        guest.messages.create(model=MODEL, max_tokens=4096, messages=messages)  # type: ignore[arg-type]
    price = price_of("anthropic", MODEL)
    assert price is not None
    body = {"model": MODEL, "max_tokens": 4096, "messages": messages}
    held = estimate(price, body, 4096, [300] * warmup).cost_usd_micros
    estimate_error = abs(held - actual)
    limit = warmup * actual + 10 * actual + actual // 2

    def call(_: int) -> str:
        try:
            guest.messages.create(model=MODEL, max_tokens=4096, messages=messages)  # type: ignore[arg-type]
            return "answered"
        except anthropic.RateLimitError:
            return "refused"

    with ThreadPoolExecutor(64) as pool:
        outcomes = list(pool.map(call, range(64)))

    answered = outcomes.count("answered")
    assert answered == 10 and outcomes.count("refused") == 54
    assert len(llm.upstream.messages()) == warmup + 10
    spent = llm.spent(tid)
    ledger = sum(int(r.cost_usd_micros) for r in llm.ledger_rows(tid))
    assert spent == ledger == (warmup + 10) * actual  # quota and the ledger agree to the micro-dollar
    assert spent <= limit + estimate_error, f"budget {limit}, spent {spent}, estimate error {estimate_error}"
    assert llm.live_holds(tid) == 0


def test_a_guest_that_hangs_up_mid_stream_still_has_its_call_recorded_once(llm: LlmBench) -> None:
    tid = llm.tenant(budget_usd_micros=5_000_000)
    b = llm.upstream.behaviour
    b.gated, b.output_tokens, b.cache_read_input_tokens = True, 777, 300
    with httpx.Client(base_url=llm.url, timeout=30) as guest:
        with guest.stream(
            "POST",
            "/v1/messages",
            headers={"x-api-key": llm.token(tid)},
            json={"model": MODEL, "max_tokens": 2000, "messages": prompt(400), "stream": True},
        ) as stream:
            request_id = stream.headers["x-swarm-request-id"]
            first = next(stream.iter_bytes())
            assert b"message_start" in first
        # The guest is gone (connection closed) while the provider is still writing.
    assert llm.record(tid, request_id) is None
    b.gate.set()
    record = eventually(lambda: llm.record(tid, request_id), what="the abandoned call settled")
    assert (record.tokens.output_tokens, record.tokens.cache_read_input_tokens) == (777, 300)
    expected = round(text_tokens({"messages": prompt(400)}) * INPUT + 777 * OUTPUT + 300 * 0.30)
    assert record.cost_usd_micros == expected
    eventually(lambda: llm.live_holds(tid) == 0, what="hold settled")
    assert llm.spent(tid) == expected and len(llm.ledger_rows(tid)) == 1


def test_settling_a_call_again_records_and_charges_nothing_more(llm: LlmBench) -> None:
    tid = llm.tenant(budget_usd_micros=5_000_000)
    raw = llm.guest(llm.token(tid)).messages.with_raw_response.create(
        model=MODEL,
        max_tokens=256,
        messages=prompt(40),  # type: ignore[arg-type]
    )
    request_id = raw.headers["x-swarm-request-id"]
    first = llm.record(tid, request_id)
    assert first is not None
    spent = llm.spent(tid)
    assert llm.live_holds(tid) == 0

    # A retried settlement (as after a lost answer from quota), by the same call id.
    again = llm.proxy.proxy.s.settler.settle(_call_of(first), _hold_of(llm, request_id), first.tokens)
    assert again == first
    assert llm.spent(tid) == spent and len(llm.ledger_rows(tid)) == 1


def _hold_of(llm: LlmBench, request_id: str) -> str:
    with llm.quota.app.db.engine.connect() as conn:
        row = conn.execute(
            sa.select(reservations.c.id).where(reservations.c.owner == f"{OWNER}/{request_id}")
        ).one()
    return str(row.id)


def _call_of(r: UsageRecord) -> Call:
    return Call(
        id=r.request_id,
        tenant_id=r.tenant_id,
        agent_id=r.agent_id,
        role=r.request_type.value,
        project_id=r.project_id,
        ticket_id=r.ticket_id,
        model=r.model,
        started_at=r.usage_at,
    )
