"""The agent runtime's stages on a real repository, with the real anthropic SDK
against a local Messages-API server and a real telemetry service."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing.default_templates import PROMPTS
from swarm_ticketing.domain import AgentRole
from swarmagent.client import ClaimedTicket
from swarmagent.gitops import Author, GitPolicy, init_repository
from swarmagent.llm import Attribution, TrackedLLM
from swarmagent.loop import WorkFailed
from swarmagent.runtime import Runtime
from swarmcommon.clients import TelemetryClient
from swarmdemo.messages_server import MessagesServer, Reply
from tests.support.harness import TelemetryHarness, start_telemetry
from tests.support.templates import template

ME = Author("Agent", "agent@swarm.invalid")


@pytest.fixture
def telemetry(tmp_path: Path) -> Iterator[TelemetryHarness]:
    h = start_telemetry(f"sqlite:///{tmp_path / 'telemetry.db'}")
    yield h
    h.stop()


@pytest.fixture
def ledger(telemetry: TelemetryHarness) -> Iterator[TelemetryClient]:
    with TelemetryClient(telemetry.target) as client:
        yield client


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    bare = tmp_path / "project.git"
    init_repository(bare, {"README.md": "# p\n"}, ME)
    return bare


def runtime(ledger: TelemetryClient, server: MessagesServer, repo: Path, tmp_path: Path) -> Runtime:
    client = anthropic.Anthropic(base_url=server.base_url, api_key="sk-test", max_retries=0)
    llm = TrackedLLM(client, ledger, Attribution("acme", "agent-1"))
    local = GitPolicy(tmp_path / "git-home", local_root=tmp_path)  # the test's own repositories
    return Runtime(llm, str(repo), "main", tmp_path / "work", ME, "claude-haiku-4-5", local)


def claimed(
    name: str, stage: int, result: dict[str, Any] | None = None, tpl: pb.AgentTemplateVersion | None = None
) -> ClaimedTicket:
    ticket = pb.Ticket(
        id=str(uuid.uuid4()),
        project_id=str(uuid.uuid4()),
        name=name,
        result_json=json.dumps(result) if result else "",
    )
    return ClaimedTicket(ticket, pb.Lease(claim_token="t"), stage, None, tpl or template(stage))


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def files_answer(files: dict[str, str]) -> Reply:
    return Reply(json.dumps({"summary": "s", "files": [{"path": p, "content": c} for p, c in files.items()]}))


def test_coder_pushes_a_branch_and_reviewer_merges_it(
    ledger: TelemetryClient, repo: Path, tmp_path: Path
) -> None:
    answers = iter([files_answer({"src/a.py": "A = 1\n"}), Reply('{"approve": true, "comments": "ok"}')])
    with MessagesServer(lambda body: next(answers)) as server:
        rt = runtime(ledger, server, repo, tmp_path)
        coded = rt.work(claimed("Add A", pb.AGENT_ROLE_CODER))
        assert coded["files"] == ["src/a.py"] and coded["branch"].endswith("-add-a")
        assert git(repo, "show", f"{coded['branch']}:src/a.py") == "A = 1\n"
        assert "src/a.py" not in git(repo, "ls-tree", "-r", "--name-only", "main")
        reviewed = rt.work(claimed("Add A", pb.AGENT_ROLE_REVIEWER, coded))
        assert reviewed["review"] == "approved" and reviewed["commit"] == coded["commit"]
        assert "src/a.py" in git(repo, "ls-tree", "-r", "--name-only", "main")
        # The reviewer saw the diff it approved.
        assert "+A = 1" in server.requests[1]["messages"][0]["content"]
    assert not any((tmp_path / "work").iterdir())  # workspaces are cleaned up


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Reply("Sorry, I can't."), "not JSON"),
        (Reply('{"summary": "nothing"}'), "no files"),
        (files_answer({"../escape.py": "x"}), "inside the work tree"),
        (files_answer({".git/hooks/pre-commit": "x"}), "inside the work tree"),
    ],
)
def test_bad_model_answers_fail_the_stage_and_push_nothing(
    ledger: TelemetryClient, repo: Path, tmp_path: Path, answer: Reply, reason: str
) -> None:
    with MessagesServer(lambda body: answer) as server:
        with pytest.raises(WorkFailed, match=reason):
            runtime(ledger, server, repo, tmp_path).work(claimed("Add B", pb.AGENT_ROLE_CODER))
    assert git(repo, "branch", "--list", "--format=%(refname:short)").split() == ["main"]
    assert not (tmp_path / "escape.py").exists()


def test_the_stage_runs_with_its_claims_template_version_only(
    ledger: TelemetryClient, repo: Path, tmp_path: Path
) -> None:
    canary = template(
        pb.AGENT_ROLE_CODER,
        template_slug="acme-coder",
        version=7,
        prompt="You are ACME's careful coder. Answer in JSON.",
        model="claude-opus-4-1",
        parameters_json='{"max_tokens": 1234}',
    )
    with MessagesServer(lambda body: files_answer({"c.py": "C = 3\n"})) as server:
        rt = runtime(ledger, server, repo, tmp_path)
        rt.work(claimed("Add C", pb.AGENT_ROLE_CODER, tpl=canary))
        sent = server.requests[0]
        assert (sent["system"], sent["model"], sent["max_tokens"]) == (
            "You are ACME's careful coder. Answer in JSON.",
            "claude-opus-4-1",
            1234,
        )
        # No model in the version: the agent's configured one.
        rt.work(claimed("Add D", pb.AGENT_ROLE_CODER, tpl=template(pb.AGENT_ROLE_CODER)))
        assert server.requests[1]["model"] == "claude-haiku-4-5"
        assert server.requests[1]["system"] == PROMPTS[AgentRole.CODER]
        bare = dataclasses.replace(claimed("Add E", pb.AGENT_ROLE_CODER), template=None)
        with pytest.raises(WorkFailed, match="carries no agent template"):
            rt.work(bare)
        assert len(server.requests) == 2, "no prompt of its own: nothing was asked"


def test_the_tickets_project_repository_wins(ledger: TelemetryClient, repo: Path, tmp_path: Path) -> None:
    with MessagesServer(lambda body: files_answer({"p.py": "P = 1\n"})) as server:
        rt = runtime(ledger, server, tmp_path / "not-this-one.git", tmp_path)
        ticket = claimed("Add P", pb.AGENT_ROLE_CODER)
        ticket.ticket.repository, ticket.ticket.base_branch = str(repo), "main"
        coded = rt.work(ticket)
        assert git(repo, "show", f"{coded['branch']}:p.py") == "P = 1\n"
        rt.repository = ""
        with pytest.raises(WorkFailed, match="names no repository"):
            rt.work(claimed("Add Q", pb.AGENT_ROLE_CODER))


def test_a_rejected_review_merges_nothing(ledger: TelemetryClient, repo: Path, tmp_path: Path) -> None:
    answers = iter(
        [files_answer({"b.py": "B = 2\n"}), Reply('{"approve": false, "comments": "needs tests"}')]
    )
    with MessagesServer(lambda body: next(answers)) as server:
        rt = runtime(ledger, server, repo, tmp_path)
        coded = rt.work(claimed("Add B", pb.AGENT_ROLE_CODER))
        with pytest.raises(WorkFailed, match="review rejected: needs tests") as rejected:
            rt.work(claimed("Add B", pb.AGENT_ROLE_REVIEWER, coded))
        assert rejected.value.details == {"branch": coded["branch"], "review": "rejected"}
        with pytest.raises(WorkFailed, match="no branch"):
            rt.work(claimed("Add B", pb.AGENT_ROLE_REVIEWER))
    assert git(repo, "log", "--format=%s", "main").splitlines() == ["Initial commit"]
