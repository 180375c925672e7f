"""Calls through the LLM proxy with the real `anthropic` SDK: answered,
recorded once with the provider's token counts at the published prices,
settled in quota, and never carrying the provider key to or from a guest."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.llmproxy.helpers import (
    CACHE_READ,
    CACHE_WRITE,
    INPUT,
    MODEL,
    OUTPUT,
    PLATFORM_KEY,
    LlmBench,
    prompt,
)
from tests.llmproxy.upstream import text_tokens
from tests.support.harness import BACKENDS


@BACKENDS
def test_a_call_is_answered_recorded_and_charged(llm: LlmBench) -> None:
    tid = llm.tenant(budget_usd_micros=5_000_000)
    guest = llm.guest(llm.token(tid, agent_id="coder-7", role="coder"))
    messages = prompt(2000)

    raw = guest.messages.with_raw_response.create(model=MODEL, max_tokens=1024, messages=messages)  # type: ignore[arg-type]
    answer = raw.parse()

    assert answer.content[0].text == "Done."  # type: ignore[union-attr]
    n_in = text_tokens({"messages": messages})
    assert answer.usage.input_tokens == n_in
    request_id = raw.headers["x-swarm-request-id"]
    record = llm.record(tid, request_id)
    assert record is not None
    assert (record.agent_id, record.request_type.value, record.model) == ("coder-7", "coder", MODEL)
    assert (record.tokens.input_tokens, record.tokens.output_tokens) == (n_in, 120)
    assert record.cost_usd_micros == n_in * INPUT + 120 * OUTPUT == 3303
    assert llm.spent(tid) == 3303  # the estimate was given back, the actual cost charged
    assert llm.live_holds(tid) == 0
    assert len(llm.ledger_rows(tid)) == 1


def test_a_streamed_call_records_cache_writes_and_reads_at_their_prices(llm: LlmBench) -> None:
    tid = llm.tenant(budget_usd_micros=5_000_000)
    b = llm.upstream.behaviour
    b.reply, b.output_tokens = "A streamed answer in two halves.", 57
    b.cache_creation_input_tokens, b.cache_read_input_tokens = 1_000, 20_000
    guest = llm.guest(llm.token(tid))
    system = [{"type": "text", "text": "You are careful. " * 50, "cache_control": {"type": "ephemeral"}}]

    with guest.messages.stream(
        model=MODEL,
        max_tokens=2048,
        system=system,
        messages=prompt(400),  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_message()
        request_id = stream.response.headers["x-swarm-request-id"]

    assert final.content[0].text == "A streamed answer in two halves."  # type: ignore[union-attr]
    assert final.usage.output_tokens == 57  # from message_delta, not message_start's 1
    # Recorded before the stream's last event reached the guest: no waiting.
    record = llm.record(tid, request_id)
    assert record is not None
    tokens = record.tokens
    input_tokens = text_tokens({"system": system, "messages": prompt(400)})
    assert (tokens.input_tokens, tokens.output_tokens) == (input_tokens, 57)
    assert (tokens.cache_creation_input_tokens, tokens.cache_read_input_tokens) == (1_000, 20_000)
    expected = round(input_tokens * INPUT + 57 * OUTPUT + 1_000 * CACHE_WRITE + 20_000 * CACHE_READ)
    assert record.cost_usd_micros == expected
    assert llm.spent(tid) == expected and llm.live_holds(tid) == 0


def test_the_guest_holds_only_its_agent_token(llm: LlmBench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    tid = llm.tenant()
    token = llm.token(tid)
    guest = llm.guest(token)
    raw = guest.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=prompt(40))  # type: ignore[arg-type]
    with guest.messages.stream(model=MODEL, max_tokens=64, messages=prompt(40)) as stream:  # type: ignore[arg-type]
        streamed = b"".join(stream.response.iter_bytes())

    seen = llm.upstream.messages()
    assert len(seen) == 2
    for s in seen:
        assert s.headers["x-api-key"] == PLATFORM_KEY
        assert "authorization" not in s.headers
        assert token not in " ".join(s.headers.values())
    # Nothing the guest gets back carries the provider key.
    assert PLATFORM_KEY not in raw.http_response.text + str(raw.headers) + streamed.decode()


def test_count_tokens_is_forwarded_with_the_platform_key(llm: LlmBench) -> None:
    tid = llm.tenant(budget_usd_micros=1)  # free at the provider: no budget needed
    counted = llm.guest(llm.token(tid)).messages.count_tokens(model=MODEL, messages=prompt(400))  # type: ignore[arg-type]
    assert counted.input_tokens == text_tokens({"messages": prompt(400)})
    seen = llm.upstream.seen[-1]
    assert seen.path == "/v1/messages/count_tokens" and seen.headers["x-api-key"] == PLATFORM_KEY
    assert llm.spent(tid) == 0


def test_an_upstream_error_is_passed_through_and_the_hold_given_back(llm: LlmBench) -> None:
    tid = llm.tenant(budget_usd_micros=5_000_000)
    llm.upstream.behaviour.fail_status = 529
    with pytest.raises(anthropic.APIStatusError) as caught:
        llm.guest(llm.token(tid)).messages.create(model=MODEL, max_tokens=256, messages=prompt(40))  # type: ignore[arg-type]
    assert caught.value.status_code == 529
    assert llm.spent(tid) == 0 and llm.live_holds(tid) == 0
    assert llm.ledger_rows(tid) == []


def test_a_model_without_a_published_price_is_refused_before_the_upstream(llm: LlmBench) -> None:
    tid = llm.tenant()
    with pytest.raises(anthropic.BadRequestError) as caught:
        llm.guest(llm.token(tid)).messages.create(
            model="claude-unpriced-9",
            max_tokens=256,
            messages=prompt(40),  # type: ignore[arg-type]
        )
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "claude-unpriced-9" in caught.value.message and "no published price" in caught.value.message
    assert llm.upstream.messages() == []


def test_a_bearer_token_works_like_an_api_key(llm: LlmBench) -> None:
    tid = llm.tenant()
    reply = httpx.post(
        f"{llm.url}/v1/messages",
        headers={"authorization": f"Bearer {llm.token(tid)}", "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "max_tokens": 32, "messages": prompt(40)},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["input_tokens"] == text_tokens({"messages": prompt(40)})
    assert len(llm.ledger_rows(tid)) == 1
