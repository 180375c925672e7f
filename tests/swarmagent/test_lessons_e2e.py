"""Learning from history end to end (both backends): a failure recorded on
one ticket of a project reaches the prompt of a later similar ticket of the
same project, worked by a real agent (AgentLoop + the runtime over gRPC, the
real anthropic SDK against the local Messages server, a real git
repository) — and never the prompt of another tenant's similar ticket."""

from __future__ import annotations

import json
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
LESSON = "tests import from src/ but the package is app/"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[TelemetryClient]:
    h: TelemetryHarness = start_telemetry(f"sqlite:///{tmp_path / 'telemetry.db'}")
    with TelemetryClient(h.target) as client:
        yield client
    h.stop()


def _files(body: dict[str, Any]) -> Reply:
    return Reply(
        json.dumps({"summary": "s", "files": [{"path": "app/tests/test_x.py", "content": "x = 1\n"}]})
    )


def _project(h: TicketingHarness, t: str, n: int) -> list[pb.Ticket]:
    tickets = [
        pb.TicketSpec(
            key=f"k{i}", name=f"Add tests for the app package ({i})", description="Write tests for app/"
        )
        for i in range(n)
    ]
    return list(h.stub.CreateProject(pb.CreateProjectRequest(tenant_id=t, name="p", tickets=tickets)).tickets)


def _work(h: TicketingHarness, t: str, server: MessagesServer, ledger: TelemetryClient, tmp: Path) -> None:
    """One real agent works the tenant's claimable tickets until none is left."""
    repo = tmp / f"{t}.git"
    init_repository(repo, {"README.md": "# p\n"}, ME)
    client = TicketingClient(h.target, t, "agent-1")
    llm = TrackedLLM(
        anthropic.Anthropic(base_url=server.base_url, api_key="sk-test", max_retries=0),
        ledger,
        Attribution(t, "agent-1"),
    )
    rt = Runtime(
        llm,
        str(repo),
        "main",
        tmp / f"work-{t}",
        ME,
        "m",
        GitPolicy(tmp / "home", local_root=tmp),
        lessons=client.lessons,
    )
    loop = AgentLoop(client, rt.work, idle_wait=0.05, claim_wait=1)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not loop.stats.completed:
        time.sleep(0.05)
    stop.set()
    thread.join()
    client.close()
    assert loop.stats.completed, "the agent finished its ticket"


def test_a_failure_reaches_the_prompt_of_a_later_similar_ticket_of_the_project_only(
    ticketing: TicketingHarness, ledger: TelemetryClient, tmp_path: Path
) -> None:
    a, b = tenant(), tenant()
    first, _ = _project(ticketing, a, 2)
    # Ticket one's coder failed, saying why; the ticket is then set aside.
    held = ticketing.stub.ClaimTicket(pb.ClaimTicketRequest(tenant_id=a, agent_id="agent-0"))
    assert held.ticket.id == first.id
    ticketing.stub.ReportFailure(
        pb.ReportFailureRequest(
            tenant_id=a, ticket_id=first.id, claim_token=held.lease.claim_token, reason=LESSON
        )
    )
    ticketing.stub.CancelTicket(
        pb.CancelTicketRequest(tenant_id=a, ticket_id=first.id, operator="ops", reason="superseded")
    )
    _project(ticketing, b, 1)  # tenant B's similar ticket
    with MessagesServer(_files) as server:
        _work(ticketing, a, server, ledger, tmp_path)
        _work(ticketing, b, server, ledger, tmp_path)
        prompts = [request_text(body) for body in server.requests]
    mine = [p for p in prompts if "(1)" in p]
    theirs = [p for p in prompts if "(0)" in p]
    assert mine and "## Lessons from This Project" in mine[0] and LESSON in mine[0]
    assert theirs and LESSON not in theirs[0], "another tenant's lesson never reaches this prompt"
