"""Only a valid agent token gets a call through the proxy: anything else is
an Anthropic-style 401 and the provider sees nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anthropic
import httpx
import pytest

from swarmcommon.agenttoken import AgentIdentity, TokenSigner, write_signing_key
from swarmcommon.clock import ManualClock
from tests.llmproxy.helpers import MODEL, LlmBench, prompt


def _refused(llm: LlmBench, api_key: str) -> anthropic.AuthenticationError:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        llm.guest(api_key).messages.create(model=MODEL, max_tokens=64, messages=prompt(40))  # type: ignore[arg-type]
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert caught.value.status_code == 401
    return caught.value


def test_an_expired_token_is_refused(llm: LlmBench) -> None:
    tid = llm.tenant()
    an_hour_ago = ManualClock(datetime.now(UTC) - timedelta(hours=1))
    old = TokenSigner.from_file(llm.keys / "key.pem", ttl=timedelta(minutes=15), clock=an_hour_ago)
    token = old.mint(AgentIdentity("agent-1", tid, "coder"))[0]
    assert "expired" in _refused(llm, token).message
    assert llm.upstream.seen == [] and llm.ledger_rows(tid) == []


def test_a_token_signed_by_another_key_is_refused(llm: LlmBench, tmp_path: Path) -> None:
    tid = llm.tenant()
    forger = TokenSigner.from_file(write_signing_key(tmp_path / "forger") / "key.pem")
    token = forger.mint(AgentIdentity("agent-1", tid, "coder"))[0]
    assert "unknown key" in _refused(llm, token).message
    assert llm.upstream.seen == []


def test_a_provider_style_key_or_garbage_is_refused(llm: LlmBench) -> None:
    assert "malformed" in _refused(llm, "sk-ant-api03-not-an-agent-token").message
    assert llm.upstream.seen == []


def test_no_credentials_at_all_is_refused(llm: LlmBench) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        reply = httpx.post(
            f"{llm.url}{path}", json={"model": MODEL, "max_tokens": 8, "messages": prompt(8)}, timeout=30
        )
        assert reply.status_code == 401
        assert reply.json()["error"]["type"] == "authentication_error"
        assert "x-api-key" in reply.json()["error"]["message"]
    assert llm.upstream.seen == []


def test_bad_requests_are_refused_in_the_anthropic_shape(llm: LlmBench) -> None:
    token = llm.token(llm.tenant())
    cases = [
        ({"max_tokens": 8, "messages": prompt(8)}, "model"),
        ({"model": MODEL, "messages": prompt(8)}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 0, "messages": prompt(8)}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 8, "messages": []}, "messages"),
        ({"model": MODEL, "max_tokens": 8, "messages": prompt(8), "stream": "yes"}, "stream"),
    ]
    for body, field in cases:
        reply = httpx.post(f"{llm.url}/v1/messages", headers={"x-api-key": token}, json=body, timeout=30)
        assert reply.status_code == 400, body
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"].startswith(field), error
    not_json = httpx.post(f"{llm.url}/v1/messages", headers={"x-api-key": token}, content=b"{", timeout=30)
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]["message"]
    bad_ticket = httpx.post(
        f"{llm.url}/v1/messages",
        headers={"x-api-key": token, "x-swarm-ticket-id": "../other tenant"},
        json={"model": MODEL, "max_tokens": 8, "messages": prompt(8)},
        timeout=30,
    )
    assert bad_ticket.status_code == 400 and "x-swarm-ticket-id" in bad_ticket.json()["error"]["message"]
    elsewhere = httpx.get(f"{llm.url}/v1/models", headers={"x-api-key": token}, timeout=30)
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["type"] == "not_found_error"
    assert llm.upstream.seen == []
