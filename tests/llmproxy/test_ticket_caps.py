"""Per-ticket cost caps through the LLM proxy, with real quota, ticketing
and telemetry servers: a call tagged with a ticket is charged to it only
when the token's agent holds the ticket's lease, and only while the
ticket's recorded spend plus the call's estimate fits its cap; the first
refusal releases the ticket for review (no failure counted) until an
operator raises its cap and redrives it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import pytest

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmcommon.agenttoken import TokenSigner, write_signing_key
from tests.llmproxy.helpers import INPUT, MODEL, OUTPUT, PLATFORM_KEY, LlmBench, prompt
from tests.llmproxy.upstream import Upstream, text_tokens
from tests.support.harness import BACKENDS, TicketingHarness, start_quota, start_telemetry, start_ticketing
from tests.support.ticketing import claim, fail, get, outbox_events, spec

pytestmark = BACKENDS

MESSAGES = prompt(40)
# What each call costs: the upstream answers 120 output tokens by default.
ACTUAL = text_tokens({"messages": MESSAGES}) * INPUT + 120 * OUTPUT
# Fits two calls (each estimated at a little over ACTUAL once there is history), not three.
CAP = 2 * ACTUAL + ACTUAL // 2


@dataclass
class CapBench:
    llm: LlmBench
    ticketing: TicketingHarness

    def project(
        self, tenant_id: str, tickets: list[pb.TicketSpec], cap: int | None = None
    ) -> list[pb.Ticket]:
        reply = self.ticketing.stub.CreateProject(
            pb.CreateProjectRequest(
                tenant_id=tenant_id, name="capped", tickets=tickets, ticket_cost_cap_usd_micros=cap
            )
        )
        return list(reply.tickets)

    def call(self, tenant_id: str, agent_id: str, ticket_id: str = "") -> httpx.Response:
        headers = {"x-api-key": self.llm.token(tenant_id, agent_id)}
        if ticket_id:
            headers["x-swarm-ticket-id"] = ticket_id
        with httpx.Client(base_url=self.llm.url, timeout=30) as client:
            return client.post(
                "/v1/messages",
                headers=headers,
                json={"model": MODEL, "max_tokens": 150, "messages": MESSAGES},
            )


@pytest.fixture
def caps(db: str, tmp_path: Path) -> Iterator[CapBench]:
    keys = write_signing_key(tmp_path / "agent-signing")
    upstream = Upstream()
    quota = start_quota(db)
    ticketing = start_ticketing(db)
    telemetry = start_telemetry(
        db,
        quota_target=quota.target,
        ticketing_target=ticketing.target,
        agent_token_public_keys=str(keys / "public.pem"),
        llm_proxy_listen_address="127.0.0.1:0",
        llm_proxy_upstream_url=upstream.base_url,
        llm_proxy_upstream_api_key=PLATFORM_KEY,
        shutdown_grace_seconds=2,
    )
    try:
        llm = LlmBench(quota, telemetry, upstream, TokenSigner.from_file(keys / "key.pem"), keys)
        yield CapBench(llm, ticketing)
    finally:
        telemetry.stop()
        ticketing.stop()
        quota.stop()
        upstream.close()


def test_a_ticket_at_its_cap_is_refused_released_for_review_and_redriven_once_raised(caps: CapBench) -> None:
    llm, stub = caps.llm, caps.ticketing.stub
    tid = llm.tenant(budget_usd_micros=5_000_000)  # the tenant's budget is far away
    ticket = caps.project(tid, [spec("capped")], cap=CAP)[0]
    # One template failure before: the budget hold must leave the count alone.
    fail(stub, tid, claim(stub, tid, "agent-0"), "flaky test")
    assert claim(stub, tid, "agent-1").ticket.id == ticket.id

    for _ in range(2):  # the first estimate is max_tokens (150), then the p90 of history (120)
        answered = caps.call(tid, "agent-1", ticket.id)
        assert answered.status_code == 200, answered.text
    assert len(llm.upstream.messages()) == 2
    rows = llm.ledger_rows(tid)
    assert [(r.ticket_id, r.project_id) for r in rows] == [(ticket.id, ticket.project_id)] * 2

    refused = caps.call(tid, "agent-1", ticket.id)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert f"LLM cost cap of ticket {ticket.id} is exhausted" in error["message"]
    assert "(set on the project)" in error["message"] and "released for review" in error["message"]
    assert refused.headers["x-should-retry"] == "false"
    assert len(llm.upstream.messages()) == 2  # the upstream never saw it
    assert llm.spent(tid) == 2 * ACTUAL and llm.live_holds(tid) == 0

    held = get(stub, tid, ticket.id)
    assert held.state == pb.TICKET_STATE_QUARANTINED
    assert held.quarantine_cause == pb.QUARANTINE_CAUSE_BUDGET_EXCEEDED
    assert held.quarantine_reason.startswith("budget exceeded")
    assert held.failure_count == 1 and held.last_failure_reason == "flaky test"
    assert not held.HasField("lease")
    dead = stub.ListDeadLetters(pb.ListDeadLettersRequest(tenant_id=tid)).tickets
    assert [(d.id, d.quarantine_cause) for d in dead] == [(ticket.id, pb.QUARANTINE_CAUSE_BUDGET_EXCEEDED)]
    budget_events = [
        data for kind, data in outbox_events(caps.ticketing, tid) if kind == "ticket.budget_exceeded"
    ]
    assert len(budget_events) == 1
    assert budget_events[0]["agent_id"] == "agent-1"
    assert budget_events[0]["cost_cap_usd_micros"] == CAP
    assert budget_events[0]["spent_usd_micros"] == 2 * ACTUAL

    # The agent lost the lease: its next call is refused before any budget is looked at.
    again = caps.call(tid, "agent-1", ticket.id)
    assert again.status_code == 403 and "holds no lease" in again.json()["error"]["message"]
    assert not claim(stub, tid, "agent-2").HasField("ticket")  # nobody can claim it while held

    stub.SetTicketCostCap(
        pb.SetTicketCostCapRequest(
            tenant_id=tid, ticket_id=ticket.id, cost_cap_usd_micros=10 * ACTUAL, operator="ops", reason="ok"
        )
    )
    redriven = stub.RedriveTickets(
        pb.RedriveTicketsRequest(tenant_id=tid, ticket_ids=[ticket.id], operator="ops", reason="cap raised")
    ).tickets[0]
    assert redriven.state == pb.TICKET_STATE_READY and redriven.failure_count == 1
    assert redriven.quarantine_cause == pb.QUARANTINE_CAUSE_UNSPECIFIED
    assert claim(stub, tid, "agent-2").ticket.id == ticket.id
    assert caps.call(tid, "agent-2", ticket.id).status_code == 200
    assert len(llm.upstream.messages()) == 3
    assert llm.spent(tid) == 3 * ACTUAL


def test_an_agent_cannot_spend_on_a_ticket_whose_lease_it_does_not_hold(caps: CapBench) -> None:
    llm, stub = caps.llm, caps.ticketing.stub
    tid = llm.tenant(budget_usd_micros=5_000_000)
    mine, unclaimed = caps.project(tid, [spec("mine", priority=1), spec("unclaimed")])
    assert claim(stub, tid, "agent-1").ticket.id == mine.id
    other_tenant = llm.tenant(budget_usd_micros=5_000_000)
    foreign = caps.project(other_tenant, [spec("foreign")])[0]
    claim(stub, other_tenant, "agent-2")

    someone_elses = caps.call(tid, "agent-2", mine.id)
    assert someone_elses.status_code == 403
    assert someone_elses.json()["error"]["type"] == "permission_error"
    assert "held by another agent" in someone_elses.json()["error"]["message"]
    nobodys = caps.call(tid, "agent-2", unclaimed.id)
    assert nobodys.status_code == 403 and "holds no lease" in nobodys.json()["error"]["message"]
    # agent-2 holds `foreign`'s lease, but in another tenant: its token's tenant has no such ticket.
    assert caps.call(tid, "agent-2", foreign.id).status_code == 404
    assert caps.call(tid, "agent-1", "not-a-uuid").status_code == 400

    assert llm.upstream.messages() == [] and llm.ledger_rows(tid) == []
    assert llm.spent(tid) == 0 and llm.live_holds(tid) == 0
    still = get(stub, tid, mine.id)  # nothing was released on the holder's behalf
    assert still.state == pb.TICKET_STATE_ASSIGNED and still.lease.agent_id == "agent-1"
    assert caps.call(tid, "agent-1", mine.id).status_code == 200


def test_the_tenant_default_caps_tickets_while_untagged_calls_meet_only_the_tenant_budget(
    caps: CapBench,
) -> None:
    llm, stub = caps.llm, caps.ticketing.stub
    tid = f"t-{uuid.uuid4().hex[:8]}"
    llm.quota.stub.CreateTenant(
        qpb.CreateTenantRequest(
            tenant_id=tid,
            plan=qpb.PLAN_PRO,
            overrides=[
                qpb.QuotaOverride(resource=qpb.RESOURCE_COST_USD_MONTH, limit=4 * ACTUAL + ACTUAL // 2),
                qpb.QuotaOverride(resource=qpb.RESOURCE_COST_USD_PER_TICKET, limit=ACTUAL // 2),
            ],
        )
    )
    guest = llm.guest(llm.token(tid, "agent-1"))
    for _ in range(4):  # four calls, each worth twice the per-ticket default: no ticket, no ticket cap
        guest.messages.create(model=MODEL, max_tokens=150, messages=MESSAGES)  # type: ignore[arg-type]
    assert llm.spent(tid) == 4 * ACTUAL
    with pytest.raises(anthropic.RateLimitError) as monthly:  # the tenant budget still holds
        guest.messages.create(model=MODEL, max_tokens=150, messages=MESSAGES)  # type: ignore[arg-type]
    assert "Monthly LLM cost budget (cost_usd_month)" in monthly.value.message
    assert len(llm.upstream.messages()) == 4

    ticket = caps.project(tid, [spec("default-capped")])[0]  # neither ticket nor project sets a cap
    claim(stub, tid, "agent-1")
    refused = caps.call(tid, "agent-1", ticket.id)
    assert refused.status_code == 429
    assert "(set on the tenant)" in refused.json()["error"]["message"]
    assert len(llm.upstream.messages()) == 4
    assert get(stub, tid, ticket.id).quarantine_cause == pb.QUARANTINE_CAUSE_BUDGET_EXCEEDED
