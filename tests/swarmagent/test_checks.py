"""The security, tests and judge stages on a real repository, with the real
anthropic SDK against a local Messages-API server."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmagent.client import ClaimedTicket
from swarmagent.gitops import Author, GitPolicy, init_repository
from swarmagent.llm import Attribution, TrackedLLM
from swarmagent.loop import WorkFailed
from swarmagent.runtime import Runtime
from swarmcommon.clients import TelemetryClient
from swarmdemo.messages_server import MessagesServer, Reply
from tests.support.harness import start_telemetry
from tests.support.templates import template

ME = Author("Agent", "agent@swarm.invalid")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[TelemetryClient]:
    h = start_telemetry(f"sqlite:///{tmp_path / 'telemetry.db'}")
    with TelemetryClient(h.target) as client:
        yield client
    h.stop()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with a branch `swarm/work` that adds calc.py."""
    bare = tmp_path / "project.git"
    init_repository(bare, {"README.md": "# p\n"}, ME)
    clone = tmp_path / "seed"
    subprocess.run(["git", "clone", "-q", str(bare), str(clone)], check=True)
    git(clone, "checkout", "-q", "-b", "swarm/work")
    (clone / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    git(clone, "add", ".")
    git(clone, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "calc")
    git(clone, "push", "-q", "origin", "swarm/work")
    return bare


def runtime(ledger: TelemetryClient, server: MessagesServer, repo: Path, tmp_path: Path) -> Runtime:
    client = anthropic.Anthropic(base_url=server.base_url, api_key="sk-test", max_retries=0)
    llm = TrackedLLM(client, ledger, Attribution("acme", "agent-1"))
    local = GitPolicy(tmp_path / "git-home", local_root=tmp_path)
    return Runtime(llm, str(repo), "main", tmp_path / "work", ME, "claude-haiku-4-5", local)


def claimed(stage: int, result: dict[str, Any] | None = None, **tpl: Any) -> ClaimedTicket:
    ticket = pb.Ticket(
        id=str(uuid.uuid4()),
        project_id=str(uuid.uuid4()),
        name="Add calc",
        result_json=json.dumps(result or {}),
    )
    return ClaimedTicket(ticket, pb.Lease(claim_token="t"), stage, None, template(stage, **tpl))


WORK = {"branch": "swarm/work", "commit": "c" * 40}


def test_security_refuses_with_its_findings_and_passes_the_branch_on(
    ledger: TelemetryClient, repo: Path, tmp_path: Path
) -> None:
    finding = {"file": "calc.py", "issue": "no input checks", "fix": "validate"}
    answers = iter([Reply(json.dumps({"approve": False, "findings": [finding]})), Reply('{"approve": true}')])
    with MessagesServer(lambda body: next(answers)) as server:
        rt = runtime(ledger, server, repo, tmp_path)
        with pytest.raises(WorkFailed, match="security review rejected: calc.py: no input checks") as refused:
            rt.work(claimed(pb.AGENT_ROLE_SECURITY, WORK))
        assert refused.value.details == {"review": "rejected", "branch": "swarm/work", "findings": [finding]}
        assert "+def add(a, b):" in server.requests[0]["messages"][0]["content"], "it read the diff"
        passed = rt.work(claimed(pb.AGENT_ROLE_SECURITY, WORK))
    assert passed == {"review": "approved", "branch": "swarm/work", "commit": "c" * 40, "findings": []}


def _tests_answer(content: str) -> Reply:
    return Reply(json.dumps({"summary": "t", "files": [{"path": "test_calc.py", "content": content}]}))


PASSING = (
    "import unittest\nfrom calc import add\n\n"
    "class T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(1, 2), 3)\n"
)


def test_the_tests_stage_commits_its_tests_and_sends_failures_back_with_the_output(
    ledger: TelemetryClient, repo: Path, tmp_path: Path
) -> None:
    failing = PASSING.replace("3)", "4)")
    answers = iter([_tests_answer(failing), _tests_answer(PASSING)])
    with MessagesServer(lambda body: next(answers)) as server:
        rt = runtime(ledger, server, repo, tmp_path)
        with pytest.raises(WorkFailed, match=r"tests failed \(exit 1\)") as refused:
            rt.work(claimed(pb.AGENT_ROLE_TESTS, WORK))
        details = refused.value.details
        assert details["review"] == "rejected" and "AssertionError: 3 != 4" in details["findings"][0]["fix"]
        assert git(repo, "show", f"{details['commit']}:test_calc.py") == failing, (
            "the failing test is on the branch"
        )
        passed = rt.work(claimed(pb.AGENT_ROLE_TESTS, WORK))
    assert passed["passed"] is True and passed["tests"] == ["test_calc.py"]
    assert git(repo, "show", "swarm/work:test_calc.py") == PASSING


def test_the_repositorys_tests_never_see_the_agents_secrets(
    ledger: TelemetryClient, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hostile repository's test prints every variable it can find.
    monkeypatch.setenv("SWARM_AGENT_TOKEN", "agent-token-secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-provider-secret")
    snoop = "import os, sys\nprint(sorted(os.environ.items()))\nsys.exit(1)\n"
    with MessagesServer(lambda body: _tests_answer(snoop)) as server:
        with pytest.raises(WorkFailed) as refused:
            runtime(ledger, server, repo, tmp_path).work(
                claimed(
                    pb.AGENT_ROLE_TESTS, WORK, parameters_json='{"test_command": ["python3", "test_calc.py"]}'
                )
            )
    output = refused.value.details["findings"][0]["fix"]
    assert "PATH" in output, "the snoop ran and printed its environment"
    assert "secret" not in output


def test_a_test_run_past_its_limit_is_a_failure(ledger: TelemetryClient, repo: Path, tmp_path: Path) -> None:
    hang = "import time\ntime.sleep(30)\n"
    parameters = json.dumps({"test_command": ["python3", "test_calc.py"], "test_timeout_seconds": 1})
    with MessagesServer(lambda body: _tests_answer(hang)) as server:
        with pytest.raises(WorkFailed, match="tests failed") as refused:
            runtime(ledger, server, repo, tmp_path).work(
                claimed(pb.AGENT_ROLE_TESTS, WORK, parameters_json=parameters)
            )
    assert "ran longer than 1 s" in refused.value.details["findings"][0]["fix"]


def _attempt(n: int, state: int = pb.TICKET_STATE_DONE, **kw: Any) -> pb.EnsembleAttempt:
    return pb.EnsembleAttempt(
        ticket_id=f"t{n}", attempt=n, state=state, result_json=json.dumps(WORK), **kw
    )  # every attempt's branch is swarm/work here


def test_the_judge_chooses_among_done_unrejected_attempts_only(
    ledger: TelemetryClient, repo: Path, tmp_path: Path
) -> None:
    answers = iter(
        [Reply('{"choice": "1", "rationale": "x"}'), Reply('{"choice": "3", "rationale": "3 is complete"}')]
    )
    attempts = (_attempt(1, pb.TICKET_STATE_QUARANTINED), _attempt(2, rejected=True), _attempt(3))
    with MessagesServer(lambda body: next(answers)) as server:
        rt = runtime(ledger, server, repo, tmp_path)
        judge = claimed(pb.AGENT_ROLE_JUDGE)
        judge = ClaimedTicket(judge.ticket, judge.lease, judge.stage, None, judge.template, attempts)
        with pytest.raises(WorkFailed, match=r"chose '1', not one of attempts \[3\]"):
            rt.work(judge)
        assert rt.work(judge) == {"choice": "t3", "attempt": 3, "rationale": "3 is complete"}
        shown = server.requests[1]["messages"][0]["content"]
        assert "## Attempt 3" in shown and "## Attempt 2" not in shown
        nothing = ClaimedTicket(judge.ticket, judge.lease, judge.stage, None, judge.template, attempts[:2])
        with pytest.raises(WorkFailed, match="no attempt to choose from"):
            rt.work(nothing)
