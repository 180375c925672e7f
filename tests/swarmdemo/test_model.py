"""The demo's model and its Messages-API server, through the real anthropic
SDK: what the agents see when the demo points them at it."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import pytest

from swarm_ticketing.default_templates import PROMPTS
from swarm_ticketing.domain import AgentRole
from swarmagent.loop import WorkFailed
from swarmagent.runtime import answer_json
from swarmdemo.messages_server import MessagesServer
from swarmdemo.model import BROKEN_SPEC, FIXED_SPEC, POISON, DemoModel

MODEL = "claude-sonnet-4-6"

# The platform's own coder and reviewer templates, as a claim hands them out.
CODER_SYSTEM = PROMPTS[AgentRole.CODER]
REVIEWER_SYSTEM = PROMPTS[AgentRole.REVIEWER]


@pytest.fixture
def model() -> DemoModel:
    return DemoModel()


@pytest.fixture
def client(model: DemoModel) -> Iterator[anthropic.Anthropic]:
    with MessagesServer(model) as server:
        yield anthropic.Anthropic(base_url=server.base_url, api_key="sk-test", max_retries=0)


def _ask(client: anthropic.Anthropic, system: str, text: str) -> anthropic.types.Message:
    return client.messages.create(
        model=MODEL, max_tokens=512, system=system, messages=[{"role": "user", "content": text}]
    )


def _text(message: anthropic.types.Message) -> str:
    return "".join(getattr(block, "text", "") for block in message.content)


def test_a_coder_gets_one_new_module_per_ticket(client: anthropic.Anthropic) -> None:
    reply = _ask(client, CODER_SYSTEM, "Ticket: Implement REST endpoints\n\nStage: coder")
    answer = answer_json(_text(reply))
    assert [f["path"] for f in answer["files"]] == ["src/implement_rest_endpoints.py"]
    assert reply.model == MODEL and reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert (reply.usage.cache_creation_input_tokens or 0) > 0


def test_a_reviewer_approves_and_counts_the_added_lines(client: anthropic.Anthropic) -> None:
    diff = "Ticket: Add A\n\nDiff:\n+++ b/a.py\n+A = 1\n+B = 2\n"
    verdict = answer_json(_text(_ask(client, REVIEWER_SYSTEM, diff)))
    assert verdict["approve"] is True and "Reviewed 2 added lines for 'Add A'" in verdict["comments"]


def test_the_poison_ticket_gets_prose_until_its_spec_is_fixed(client: anthropic.Anthropic) -> None:
    prompt = f"Ticket: {POISON}\n\n{BROKEN_SPEC}\n\nStage: coder"
    with pytest.raises(WorkFailed, match="not JSON"):
        answer_json(_text(_ask(client, CODER_SYSTEM, prompt)))
    prompt = f"Ticket: {POISON}\n\n{FIXED_SPEC}\n\nStage: coder"
    answer = answer_json(_text(_ask(client, CODER_SYSTEM, prompt)))
    assert answer["files"][0]["path"] == "src/migrate_legacy_billing_schema.py"


def test_the_server_refuses_what_the_messages_api_refuses(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        client.messages.create(model=MODEL, max_tokens=0, messages=[{"role": "user", "content": "x"}])
    base = str(client.base_url).rstrip("/")
    assert httpx.post(f"{base}/v1/elsewhere", json={}).status_code == 404
    assert httpx.post(f"{base}/v1/messages", content=b"{not json").status_code == 400


def test_the_judge_takes_the_complete_attempt_and_says_why() -> None:
    sections = [
        f"## Attempt {n} (id t{n})\nSummary: s\nDiff:\n"
        + "\n".join(f"+line {i}" for i in range(lines))
        + extra
        for n, lines, extra in [(1, 9, "\n+# TODO: later"), (2, 6, ""), (3, 4, "")]
    ]
    asked = {"role": "user", "content": "Ticket: x\n\n" + "\n\n".join(sections)}
    verdict = answer_json(DemoModel()({"system": PROMPTS[AgentRole.JUDGE], "messages": [asked]}).text)
    assert verdict["choice"] == "2"
    assert verdict["rationale"].startswith("Attempt 2 is the most complete (score 6")
