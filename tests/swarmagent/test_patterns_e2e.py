"""Pipeline and ensemble tickets worked to done by real agents: AgentLoops
with the real runtime over gRPC against ticketing (both backends), a real
git repository, the real `anthropic` SDK against a local Messages-API
server whose model plays each role from the platform's templates.

The pipeline's coder first writes code with `eval` (security sends it back
with the finding), then code with a bug (the tests stage's test fails and
sends it back with the output), then the right code; the ensemble's three
coders write three versions, the judge picks the complete one and says why,
and only that branch is reviewed and merged."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmagent.client import TicketingClient
from swarmagent.gitops import Author, GitPolicy, init_repository
from swarmagent.llm import Attribution, TrackedLLM
from swarmagent.loop import AgentLoop
from swarmagent.runtime import Runtime
from swarmcommon.clients import TelemetryClient
from swarmdemo.messages_server import MessagesServer, Reply, request_text
from tests.support.harness import BACKENDS, TelemetryHarness, TicketingHarness, start_telemetry
from tests.support.ticketing import tenant

pytestmark = BACKENDS
ME = Author("Agent", "agent@swarm.invalid")

GREET_EVAL = 'def greet(name):\n    return eval(repr("Hello, " + name))\n'
GREET_BUG = 'def greet(name):\n    return "Hello " + name\n'
GREET_OK = 'def greet(name):\n    return "Hello, " + name\n'
GREET_TEST = (
    "import unittest\n\nfrom greet import greet\n\n\n"
    "class GreetTest(unittest.TestCase):\n"
    "    def test_greets_by_name(self):\n"
    '        self.assertEqual(greet("Ada"), "Hello, Ada")\n'
)
SLUGS = {
    1: "def slug(text):\n    # TODO: punctuation\n    return text.lower()\n",
    2: 'import re\n\n\ndef slug(text):\n    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")\n',
    3: (
        'def slug(text):\n    out = ""\n    for ch in text.lower():\n'
        '        out += ch if ch.isalnum() else "-"\n'
        '    while "--" in out:\n        out = out.replace("--", "-")\n    return out.strip("-")\n'
    ),
}


def _files(files: dict[str, str]) -> Reply:
    return Reply(json.dumps({"summary": "s", "files": [{"path": p, "content": c} for p, c in files.items()]}))


def model(body: dict[str, Any]) -> Reply:
    """Each role as the platform's template prompt names it."""
    system = body.get("system", "")
    text = request_text(body).split(system, 1)[-1]
    if "security reviewer" in system:
        if "eval(" in text:
            finding = {"file": "greet.py", "issue": "eval on a built string", "fix": "return the string"}
            return Reply(json.dumps({"approve": False, "findings": [finding]}))
        return Reply(json.dumps({"approve": True, "findings": []}))
    if "test engineer" in system:
        return _files({"test_greet.py": GREET_TEST})
    if "judge of several attempts" in system:
        complete = [
            int(n)
            for n, diff in re.findall(r"## Attempt (\d+) .*?\n(.*?)(?=\n## Attempt|\Z)", text, re.S)
            if "TODO" not in diff
        ]
        best = min(complete, key=lambda n: len(SLUGS[n]))
        return Reply(
            json.dumps({"choice": str(best), "rationale": f"Attempt {best} is complete and shortest."})
        )
    if "code reviewer" in system:
        return Reply(json.dumps({"approve": True, "comments": "fine"}))
    attempt = re.search(r"\(attempt (\d) of 3\)", text)
    if attempt:
        return _files({"slug.py": SLUGS[int(attempt.group(1))]})
    if "tests failed" in text:
        return _files({"greet.py": GREET_OK})
    if "came back" in text:
        return _files({"greet.py": GREET_BUG})
    return _files({"greet.py": GREET_EVAL})


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[TelemetryClient]:
    h: TelemetryHarness = start_telemetry(f"sqlite:///{tmp_path / 'telemetry.db'}")
    with TelemetryClient(h.target) as client:
        yield client
    h.stop()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def _run(loops: list[AgentLoop], stub: Any, t: str, seconds: float = 90) -> None:
    stop = threading.Event()
    threads = [threading.Thread(target=loop.run, args=(stop,)) for loop in loops]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            states = {
                x.state for x in stub.ListTickets(pb.ListTicketsRequest(tenant_id=t, page_size=50)).tickets
            }
            if states <= {pb.TICKET_STATE_DONE, pb.TICKET_STATE_QUARANTINED}:
                return
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_pipeline_and_ensemble_tickets_are_worked_to_done_by_real_agents(
    ticketing: TicketingHarness, ledger: TelemetryClient, tmp_path: Path
) -> None:
    repo = tmp_path / "project.git"
    init_repository(repo, {"README.md": "# p\n"}, ME)
    t = tenant()
    made = ticketing.stub.CreateProject(
        pb.CreateProjectRequest(
            tenant_id=t,
            name="patterns",
            tickets=[
                pb.TicketSpec(key="g", name="Add greet", pattern=pb.COLLABORATION_PATTERN_PIPELINE),
                pb.TicketSpec(key="s", name="Add slug", pattern=pb.COLLABORATION_PATTERN_ENSEMBLE),
            ],
        )
    ).tickets
    pipeline, ensemble = made[0], made[1]

    with MessagesServer(model) as server:
        loops, clients = [], []
        for n in range(3):
            client = anthropic.Anthropic(base_url=server.base_url, api_key="sk-test", max_retries=0)
            llm = TrackedLLM(client, ledger, Attribution(t, f"agent-{n}"))
            local = GitPolicy(tmp_path / f"git-home-{n}", local_root=tmp_path)
            rt = Runtime(llm, str(repo), "main", tmp_path / f"work-{n}", ME, "claude-haiku-4-5", local)
            clients.append(TicketingClient(ticketing.target, t, f"agent-{n}"))
            loops.append(AgentLoop(clients[-1], rt.work, idle_wait=0.05, claim_wait=1))
        _run(loops, ticketing.stub, t)
        for c in clients:
            c.close()

    def ticket(ticket_id: str) -> pb.Ticket:
        return ticketing.stub.GetTicket(pb.GetTicketRequest(tenant_id=t, ticket_id=ticket_id)).ticket

    def audit(ticket_id: str) -> list[pb.TicketEvent]:
        req = pb.ListTicketEventsRequest(tenant_id=t, ticket_id=ticket_id, page_size=200)
        return list(ticketing.stub.ListTicketEvents(req).events)

    assert ticket(pipeline.id).state == pb.TICKET_STATE_DONE, ticket(pipeline.id)
    assert ticket(ensemble.id).state == pb.TICKET_STATE_DONE, ticket(ensemble.id)
    sent = [
        (e.rationale, json.loads(e.new_value_json)) for e in audit(pipeline.id) if e.event_type == "sent_back"
    ]
    assert [s[1]["stage"] for s in sent] == ["coder", "coder"]
    assert "eval on a built string" in sent[0][0] and sent[1][0].startswith("tests failed")

    (judged,) = [e for e in audit(ensemble.id) if e.event_type == "judged"]
    assert judged.rationale == "Attempt 3 is complete and shortest." or judged.rationale.startswith(
        "Attempt 2"
    )
    chosen = json.loads(judged.new_value_json)["attempt"]
    assert chosen in (2, 3)

    main = {path: git(repo, "show", f"main:{path}") for path in ("greet.py", "test_greet.py", "slug.py")}
    assert main["greet.py"] == GREET_OK and main["test_greet.py"] == GREET_TEST
    assert main["slug.py"] == SLUGS[chosen], "only the judge's choice was merged"
    merged = ticketing.stub.ListMergeRequests(pb.ListMergeRequestsRequest(tenant_id=t)).merge_requests
    assert sorted((m.ticket_id, m.state) for m in merged) == sorted(
        [(pipeline.id, pb.MERGE_REQUEST_STATE_MERGED), (ensemble.id, pb.MERGE_REQUEST_STATE_MERGED)]
    )
