"""The agent runtime's tracked LLM client in proxy mode (a guest with an
agent token): it calls the LLM proxy with the *current* token as the API key
(a heartbeat's renewed token is used by the next call), names the ticket it
works for, keeps its GenAI spans, and owns no accounting (the proxy records
each call once; the client neither checks the budget nor records usage)."""

from __future__ import annotations

import anthropic
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from swarmagent import credentials as agent_credentials
from swarmagent.credentials import AgentCredentials
from swarmagent.llm import Attribution, TrackedLLM
from swarmagent.llmproxy import proxy_client
from swarmagent.loop import WorkFailed
from swarmagent.runtime import FromEnvironment
from tests.llmproxy.helpers import MODEL, LlmBench, prompt
from tests.support.harness import BACKENDS


def _tracked(llm: LlmBench, creds: AgentCredentials, tenant_id: str) -> TrackedLLM:
    client = proxy_client({"SWARM_LLM_BASE_URL": llm.url}, creds, max_retries=0)
    agent = TrackedLLM(client, None, Attribution(tenant_id, "agent-1"), api_key=lambda: creds.token)
    return agent.for_ticket("project-1", "ticket-1", "coder")


@BACKENDS
def test_calls_carry_the_current_token_and_are_recorded_once_by_the_proxy(
    llm: LlmBench, spans: InMemorySpanExporter
) -> None:
    tid = llm.tenant(budget_usd_micros=5_000_000)
    creds = AgentCredentials(llm.token(tid, agent_id="agent-1"))
    tracked = _tracked(llm, creds, tid)
    assert tracked.through_proxy and tracked.usage is None  # nothing to record or retry here

    first = tracked.create(model=MODEL, max_tokens=256, messages=prompt(400))
    creds.renew(llm.token(tid, agent_id="agent-2"))  # as a heartbeat does
    second = tracked.create(model=MODEL, max_tokens=256, messages=prompt(400))

    # Each call is in the ledger once, under the agent of the token it carried.
    rows = sorted(llm.ledger_rows(tid), key=lambda r: str(r.agent_id))
    assert [(r.agent_id, r.project_id, r.ticket_id) for r in rows] == [
        ("agent-1", "project-1", "ticket-1"),
        ("agent-2", "project-1", "ticket-1"),
    ]
    assert all(seen.headers["x-api-key"] != creds.token for seen in llm.upstream.seen)
    # The GenAI spans stay, and name the proxy's record of each call.
    chats = [s for s in spans.get_finished_spans() if s.name == f"chat {MODEL}"]
    by_response = {(s.attributes or {}).get("gen_ai.response.id"): dict(s.attributes or {}) for s in chats}
    for reply in (first, second):
        attrs = by_response[reply.id]
        assert attrs["gen_ai.usage.output_tokens"] == reply.usage.output_tokens
        assert attrs["swarm.ticket_id"] == "ticket-1"
        assert llm.record(tid, str(attrs["swarm.llm_proxy.request_id"])) is not None


def test_an_over_budget_call_is_the_proxys_refusal_traced_as_an_error(
    llm: LlmBench, spans: InMemorySpanExporter
) -> None:
    tid = llm.tenant(budget_usd_micros=1)
    tracked = _tracked(llm, AgentCredentials(llm.token(tid)), tid)
    with pytest.raises(anthropic.RateLimitError, match="budget"):
        tracked.create(model=MODEL, max_tokens=256, messages=prompt(400))
    assert llm.upstream.seen == []
    (chat,) = [
        s
        for s in spans.get_finished_spans()
        if s.name == f"chat {MODEL}" and (s.attributes or {}).get("swarm.tenant_id") == tid
    ]
    assert (chat.attributes or {})["error.type"] == "RateLimitError"


def test_the_runtime_with_a_token_uses_only_the_proxy(llm: LlmBench, monkeypatch: pytest.MonkeyPatch) -> None:
    tid = llm.tenant()
    monkeypatch.setattr(agent_credentials, "_process", AgentCredentials(llm.token(tid)))
    env = {"SWARM_TENANT_ID": tid, "SWARM_AGENT_ID": "agent-1", "ANTHROPIC_API_KEY": "sk-ignored"}
    # No proxy configured: refused, never the SDK's default endpoint (the provider) with the token.
    with pytest.raises(WorkFailed, match="SWARM_LLM_BASE_URL"):
        FromEnvironment().llm(env)
    runtime = FromEnvironment()
    tracked = runtime.llm({**env, "SWARM_LLM_BASE_URL": llm.url})
    assert tracked.through_proxy and tracked.telemetry is None and runtime._telemetry is None
    tracked.create(model=MODEL, max_tokens=64, messages=prompt(100))
    (seen,) = llm.upstream.seen
    assert seen.headers["x-api-key"] != "sk-ignored"
    assert len(llm.ledger_rows(tid)) == 1
