"""Usage records outlive telemetry outages and the tickets they were made for
(defect 14): the agent's buffer keeps them, retries in the background and on
shutdown, and the ledger counts each call once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import grpc
import pytest

from swarm.telemetry.v1 import telemetry_pb2 as tpb
from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_telemetry import server as telemetry_server
from swarm_telemetry.config import Settings as TelemetrySettings
from swarmagent.client import ClaimedTicket
from swarmagent.gitops import Author, GitPolicy, init_repository
from swarmagent.llm import Attribution, TrackedLLM
from swarmagent.runtime import Runtime
from swarmagent.usage import UsageBuffer
from swarmcommon.clients import TelemetryClient
from swarmcommon.errors import SwarmError
from swarmcommon.localproc import free_port
from swarmdemo.messages_server import MessagesServer, Reply
from tests.support.templates import template
from tests.support.waiting import eventually

ME = Author("Agent", "agent@swarm.invalid")
MODEL = "claude-haiku-4-5"
TENANT = "acme"


class Outage:
    """A real telemetry server on one fixed port that can go down and come back
    (tests/support's start_telemetry always picks a new port)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.target = f"127.0.0.1:{free_port()}"
        self.app: telemetry_server.Telemetry | None = None

    def up(self, *clients: TelemetryClient) -> None:
        """Serve again; `clients` are waited for until they see it (a channel
        that saw the outage reconnects after its own backoff)."""
        settings = TelemetrySettings(
            database_url=self.url, listen_address=self.target, retention_interval_seconds=0
        )
        self.app = telemetry_server.start(settings)
        for client in clients:
            eventually(lambda c=client: c.health() == "SERVING", what=f"telemetry serving {client.target}")

    def down(self) -> None:
        if self.app is not None:
            self.app.stop(grace=0.1)
            self.app = None


@pytest.fixture
def telemetry(tmp_path: Path) -> Iterator[Outage]:
    outage = Outage(f"sqlite:///{tmp_path / 'telemetry.db'}")
    outage.up()
    yield outage
    outage.down()


@pytest.fixture
def ledger(telemetry: Outage) -> Iterator[TelemetryClient]:
    with TelemetryClient(telemetry.target, default_timeout=2) as client:
        yield client


class CountingLedger(TelemetryClient):
    """The ledger client, noting every record it is asked to send."""

    def __init__(self, target: str) -> None:
        super().__init__(target, default_timeout=2)
        self.sent: list[tpb.RecordUsageRequest] = []

    def record_usage(self, request: tpb.RecordUsageRequest) -> tpb.UsageRecord:
        self.sent.append(request)
        return super().record_usage(request)


def files_answer(path: str) -> Reply:
    return Reply(json.dumps({"summary": "s", "files": [{"path": path, "content": "X = 1\n"}]}))


def calls_by_ticket(ledger: TelemetryClient) -> dict[str, int]:
    summary = ledger.stub.GetUsageSummary(
        tpb.GetUsageSummaryRequest(tenant_id=TENANT, group_by=tpb.USAGE_GROUP_BY_TICKET)
    )
    return {row.key: row.totals.request_count for row in summary.rows}


def coder_ticket(name: str) -> ClaimedTicket:
    ticket = pb.Ticket(id=str(uuid.uuid4()), project_id=str(uuid.uuid4()), name=name)
    return ClaimedTicket(
        ticket, pb.Lease(claim_token="t"), pb.AGENT_ROLE_CODER, None, template(pb.AGENT_ROLE_CODER)
    )


def _anthropic(server: MessagesServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="sk-test", max_retries=0)


def _ask(llm: TrackedLLM) -> anthropic.types.Message:
    return llm.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}])


def test_usage_unrecorded_during_a_ticket_arrives_once_telemetry_is_back(
    telemetry: Outage, ledger: TelemetryClient, tmp_path: Path
) -> None:
    repo = tmp_path / "project.git"
    init_repository(repo, {"README.md": "# p\n"}, ME)
    first_call: list[bool] = []

    def respond(body: object) -> Reply:
        # Telemetry goes down while the model thinks: the budget was checked,
        # the usage record cannot be sent.
        if not first_call:
            first_call.append(True)
            telemetry.down()
        return files_answer(f"f{len(first_call)}.py")

    sender = CountingLedger(telemetry.target)
    usage = UsageBuffer(sender, interval=0.1, max_backoff=0.5)
    with MessagesServer(respond) as server:
        llm = TrackedLLM(_anthropic(server), ledger, Attribution(TENANT, "agent-1"), usage=usage)
        local = GitPolicy(tmp_path / "git-home", local_root=tmp_path)
        rt = Runtime(llm, str(repo), "main", tmp_path / "work", ME, MODEL, local)
        down_ticket = coder_ticket("Add A")
        rt.work(down_ticket)  # the ticket ends; its usage is not in the ledger
        assert first_call and usage.pending == 1

        telemetry.up(ledger)
        eventually(
            lambda: calls_by_ticket(ledger) == {down_ticket.id: 1},
            what="the ended ticket's usage in the ledger",
        )
        eventually(lambda: usage.pending == 0, what="the buffer emptied")
        assert len(sender.sent) >= 2  # it was tried while telemetry was down, and again after

        # Sending the same record again (an acknowledgement lost on the way
        # back) is harmless: the ledger is idempotent on request_id.
        usage.add(sender.sent[-1])
        assert usage.flush()
        # A later ticket is recorded too, and the first is still counted once.
        up_ticket = coder_ticket("Add B")
        rt.work(up_ticket)
        assert calls_by_ticket(ledger) == {down_ticket.id: 1, up_ticket.id: 1}
    usage.close()
    sender.close()


def test_closing_the_agent_sends_the_records_left(telemetry: Outage, ledger: TelemetryClient) -> None:
    def respond(body: object) -> Reply:
        telemetry.down()
        return Reply("hi")

    # No background pass within the test: only closing can send the record.
    usage = UsageBuffer(ledger, interval=3600)
    with MessagesServer(respond) as server:
        llm = TrackedLLM(
            _anthropic(server), ledger, Attribution(TENANT, "agent-1", ticket_id="t-1"), usage=usage
        )
        _ask(llm)
    assert usage.pending == 1
    telemetry.up(ledger)
    llm.close()  # the agent stops
    assert usage.pending == 0
    assert calls_by_ticket(ledger) == {"t-1": 1}


def test_a_full_buffer_refuses_new_calls_before_they_are_sent(
    telemetry: Outage, ledger: TelemetryClient
) -> None:
    """Spend the ledger cannot see escapes every budget: past the bound, no new call."""
    unreachable = TelemetryClient(f"127.0.0.1:{free_port()}", default_timeout=1)
    usage = UsageBuffer(unreachable, interval=3600, capacity=2)
    with MessagesServer(lambda body: Reply("hi")) as server:
        llm = TrackedLLM(_anthropic(server), ledger, Attribution(TENANT, "agent-1"), usage=usage)
        _ask(llm)
        _ask(llm)
        assert usage.pending == 2
        with pytest.raises(SwarmError) as refused:
            _ask(llm)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        assert (
            "not in the cost ledger" in refused.value.message and "no call was made" in refused.value.message
        )
        assert len(server.requests) == 2
    usage.close()
    unreachable.close()


def test_a_record_the_ledger_refuses_does_not_hold_back_the_others(ledger: TelemetryClient) -> None:
    usage = UsageBuffer(ledger, interval=3600)

    def record(request_id: str, request_type: str, ticket_id: str) -> tpb.RecordUsageRequest:
        return tpb.RecordUsageRequest(
            request_id=request_id,
            tenant_id=TENANT,
            ticket_id=ticket_id,
            request_type=request_type,
            provider="anthropic",
            model=MODEL,
            input_tokens=10,
            output_tokens=5,
        )

    usage.add(record("msg_bad", "not-a-type", "t-bad"))  # INVALID_ARGUMENT, forever
    good = record("msg_good", "coder", "t-good")
    usage.add(good)
    usage.add(good)  # one per request_id
    assert usage.pending == 2
    assert usage.flush()
    assert usage.pending == 0
    assert calls_by_ticket(ledger) == {"t-good": 1}
