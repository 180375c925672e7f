"""The agent loop against a real ticketing server: work, failures, lost leases."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import anthropic
import pytest
import sqlalchemy as sa

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing.tables import tickets
from swarmagent.client import ClaimedTicket, TicketingClient
from swarmagent.llm import Attribution, TrackedLLM
from swarmagent.loop import AgentLoop, WorkFailed
from swarmdemo.messages_server import MessagesServer, Reply
from tests.support.harness import TicketingHarness
from tests.support.ticketing import create_project, get, spec, tenant
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]


def _run_until_idle(loop: AgentLoop, seconds: float = 10) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + seconds
    tenant_id = loop.client.tenant_id
    while time.monotonic() < deadline:
        states = {
            t.state for t in loop.client.stub.ListTickets(pb.ListTicketsRequest(tenant_id=tenant_id)).tickets
        }
        if states <= {pb.TICKET_STATE_DONE, pb.TICKET_STATE_QUARANTINED}:
            break
        time.sleep(0.05)
    stop.set()
    thread.join()


def test_loop_submits_work_results_and_reports_failures(ticketing: TicketingHarness) -> None:
    t = tenant()
    created = create_project(ticketing.stub, t, [spec("good"), spec("bad")]).tickets
    good, bad = created[0].id, created[1].id

    def work(claimed: ClaimedTicket) -> dict[str, Any]:
        if claimed.id == bad:
            raise WorkFailed("tests do not compile", {"file": "x.py"})
        return {"branch": f"swarm/{claimed.id[:8]}"}

    client = TicketingClient(ticketing.target, t, "agent-1")
    loop = AgentLoop(client, work, idle_wait=0.01)
    _run_until_idle(loop)
    client.close()

    assert loop.stats.completed == [good]
    assert loop.stats.failed == [bad, bad, bad]
    assert get(ticketing.stub, t, good).result_json == f'{{"branch":"swarm/{good[:8]}"}}'
    poisoned = get(ticketing.stub, t, bad)
    assert poisoned.state == pb.TICKET_STATE_QUARANTINED
    assert poisoned.quarantine_reason == "Failed 3 times: tests do not compile"


def test_an_idle_agent_waits_on_the_server_and_stops_at_once(ticketing: TicketingHarness) -> None:
    t = tenant()
    client = TicketingClient(ticketing.target, t, "agent-1")
    loop = AgentLoop(client, lambda claimed: {"branch": f"swarm/{claimed.id[:8]}"}, claim_wait=20)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    try:
        pollers = ticketing.app.pollers
        eventually(lambda: len(pollers) == 1, what="the agent parked on the server")
        made = create_project(ticketing.stub, t, [spec("late")]).tickets[0].id
        eventually(lambda: get(ticketing.stub, t, made).state == pb.TICKET_STATE_DONE, what="ticket done")
        assert pollers.stats.sync == 1, "handed to the parked agent, not found by a later poll"
        eventually(lambda: len(pollers) == 1, what="the agent parked again")
        stopped = time.monotonic()
        stop.set()
        thread.join(timeout=5)
        assert not thread.is_alive()
        assert time.monotonic() - stopped < 2, "stop hung up the long poll instead of waiting it out"
        eventually(lambda: len(pollers) == 0, what="the server let the poller go")
    finally:
        stop.set()
        thread.join()
        client.close()
    assert loop.stats.completed == [made]


def test_unexpected_exceptions_are_reported_with_their_type(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("a")]).tickets[0]

    def work(claimed: ClaimedTicket) -> dict[str, Any]:
        raise KeyError("missing_config")

    client = TicketingClient(ticketing.target, t, "agent-1")
    AgentLoop(client, work).run_one(client.claim() or pytest.fail("nothing claimed"))
    client.close()
    assert get(ticketing.stub, t, ticket.id).last_failure_reason == "KeyError: 'missing_config'"


def test_heartbeats_hold_the_lease_and_a_lost_lease_stops_the_submit(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("slow")]).tickets[0]
    client = TicketingClient(ticketing.target, t, "slow-agent")
    claimed = client.claim() or pytest.fail("nothing claimed")
    beats_seen = threading.Event()

    def work(c: ClaimedTicket) -> dict[str, Any]:
        # While we "work", time passes beyond the lease twice; heartbeats renew it.
        for _ in range(2):
            ticketing.clock.advance(timedelta(minutes=10))
            time.sleep(0.15)
        beats_seen.set()
        # Now the agent goes silent long enough for the lease to expire and
        # another agent to take the ticket over.
        ticketing.clock.advance(timedelta(minutes=16))
        rival = TicketingClient(ticketing.target, t, "rival")
        taken = rival.claim()
        rival.close()
        assert taken is not None and taken.id == c.id
        time.sleep(0.15)
        return {"late": True}

    loop = AgentLoop(client, work, heartbeat_interval=0.05)
    loop.run_one(claimed)
    client.close()
    assert beats_seen.is_set()
    assert loop.stats.lost == [ticket.id]
    assert loop.stats.completed == []
    final = get(ticketing.stub, t, ticket.id)
    assert final.lease.agent_id == "rival"
    assert final.result_json == ""


def test_the_agent_process_closes_its_work_when_it_stops(ticketing: TicketingHarness, tmp_path: Path) -> None:
    """Work may hold things for the agent's lifetime (the runtime's unsent
    usage records): the agent lets it close them before it exits."""
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("a")]).tickets[0]
    marker = tmp_path / "closed"
    agent = subprocess.run(
        [
            sys.executable, "-m", "swarmagent.agent",
            "--ticketing", ticketing.target, "--tenant", t, "--agent-id", "closer",
            "--work", "tests.swarmagent.work:closing", "--max-tickets", "1",
        ],
        cwd=REPO,
        env={**os.environ, "SWARM_TEST_CLOSED_MARKER": str(marker), "OTEL_TRACES_EXPORTER": "none"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert agent.returncode == 0, agent.stderr
    assert get(ticketing.stub, t, ticket.id).result_json == '{"done_by":"agent"}'
    assert marker.read_text() == "closed"


def test_a_cancelled_ticket_stops_its_work_at_the_next_llm_call(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("long")]).tickets[0]
    asked = threading.Event()
    with MessagesServer(lambda body: (asked.set(), Reply("ok"))[1]) as server:
        client = anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0)
        llm = TrackedLLM(client, None, Attribution(t, "agent-1"), api_key=lambda: "token")

        def work(claimed: ClaimedTicket) -> dict[str, Any]:
            # A long stage: an LLM call every 50 ms for up to 10 s.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                llm.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "go on"}])
                time.sleep(0.05)
            return {}

        agent = TicketingClient(ticketing.target, t, "agent-1")
        loop = AgentLoop(agent, work, heartbeat_interval=0.1, idle_wait=0.01)
        thread = threading.Thread(target=loop.run_one, args=(agent.claim(0),))
        thread.start()
        assert asked.wait(5), "the work started"
        ticketing.stub.CancelTicket(
            pb.CancelTicketRequest(tenant_id=t, ticket_id=ticket.id, operator="ops@acme", reason="stop")
        )
        cancelled = time.monotonic()
        thread.join(5)
        assert not thread.is_alive(), "the work stopped"
        # Within one heartbeat interval (0.1 s) and the call then under way, with room for a loaded machine.
        assert time.monotonic() - cancelled < 2.0
        calls = len(server.requests)
        time.sleep(0.3)
        assert len(server.requests) == calls, "no LLM call after the stop"
        agent.close()
    assert loop.stats.lost == [ticket.id] and loop.stats.failed == []
    assert get(ticketing.stub, t, ticket.id).state == pb.TICKET_STATE_CANCELLED


def test_heartbeats_report_the_works_steps(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("steps")]).tickets[0]
    finish = threading.Event()

    def progress() -> int | None:
        with ticketing.app.db.engine.connect() as conn:
            value = conn.execute(
                sa.select(tickets.c.lease_progress).where(tickets.c.id == ticket.id)
            ).scalar()
        return int(value) if value is not None else None

    with MessagesServer(lambda body: Reply("ok")) as server:
        client = anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0)
        llm = TrackedLLM(client, None, Attribution(t, "agent-1"), api_key=lambda: "token")

        def work(claimed: ClaimedTicket) -> dict[str, Any]:
            for _ in range(2):  # two steps, then a long wait (a slow tool)
                llm.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "step"}])
            finish.wait(10)
            return {}

        agent = TicketingClient(ticketing.target, t, "agent-1")
        loop = AgentLoop(agent, work, heartbeat_interval=0.05, idle_wait=0.01)
        thread = threading.Thread(target=loop.run_one, args=(agent.claim(0),))
        thread.start()
        try:
            eventually(lambda: progress() == 2, what="the heartbeat reported two steps")
        finally:
            finish.set()
            thread.join(5)
            agent.close()
    assert loop.stats.completed == [ticket.id]
