"""Defect 13: the stale-ticket check. An agent that keeps heartbeating BUSY
on one ticket for longer than `stale_ticket_seconds` is hung: the check
reports it and heals it like a silent agent (leases released through
ticketing, terminated, replaced, audited, announced)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_vmhost.tables import outbox
from swarmcommon.clock import ManualClock
from tests.support.harness import BACKENDS, TicketingHarness, start_ticketing
from tests.support.status import raises_status
from tests.vmhost.harness import VmHostHarness

pytestmark = BACKENDS

STALE = timedelta(hours=2)


@pytest.fixture
def own_ticketing(tmp_path: Path) -> Iterator[TicketingHarness]:
    """Ticketing on a database of its own (vmhost has the parametrized one)."""
    harness = start_ticketing(f"sqlite:///{tmp_path / 'ticketing.db'}")
    try:
        yield harness
    finally:
        harness.stop()


def _beat(host: VmHostHarness, agent_id: str, ticket_id: str) -> pb.Agent:
    return host.stub.Heartbeat(
        pb.HeartbeatRequest(
            tenant_id="acme", agent_id=agent_id, ticket_id=ticket_id, state=pb.AGENT_STATE_BUSY
        )
    ).agent


def _stale_check(host: VmHostHarness) -> pb.HealthCheckStatus:
    report = host.stub.GetHealingReport(pb.GetHealingReportRequest())
    return next(c for c in report.checks if c.check == pb.HEALTH_CHECK_STALE_TICKETS)


def _healed_events(host: VmHostHarness, agent_id: str) -> list[dict[str, object]]:
    with host.app.db.engine.connect() as conn:
        rows = conn.execute(sa.select(outbox.c.payload).where(outbox.c.event_type == "agent.healed")).all()
    return [p for p in (json.loads(r.payload) for r in rows) if p["agent_id"] == agent_id]


def _actions_between(host: VmHostHarness, start: datetime, end: datetime) -> list[pb.HealingAction]:
    request = pb.ListHealingActionsRequest(tenant_id="acme")
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(end)
    return list(host.stub.ListHealingActions(request).actions)


def test_an_agent_busy_on_one_ticket_too_long_is_reported_and_healed(
    make_vmhost: Callable[..., VmHostHarness], own_ticketing: TicketingHarness
) -> None:
    clock = ManualClock()
    host = make_vmhost(
        clock=clock,
        ticketing_target=own_ticketing.target,
        guest_command="sleep 600",  # the hung guest: vmhost hears only the heartbeats this test sends
        default_driver="process",
        stale_ticket_seconds=STALE.total_seconds(),
    )
    project = own_ticketing.stub.CreateProject(
        tpb.CreateProjectRequest(tenant_id="acme", name="p", tickets=[tpb.TicketSpec(key="a", name="A")])
    )
    ticket_id = project.tickets[0].id
    agent = host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme", template="default")).agent
    claimed = own_ticketing.stub.ClaimTicket(tpb.ClaimTicketRequest(tenant_id="acme", agent_id=agent.id))
    assert claimed.ticket.id == ticket_id

    # Working on one ticket for a while, then on another: neither is stale.
    _beat(host, agent.id, "warm-up-ticket")
    clock.advance(STALE * 0.75)
    _beat(host, agent.id, ticket_id)  # a new ticket starts its own clock
    clock.advance(STALE * 0.75)
    _beat(host, agent.id, ticket_id)
    host.app.monitor.run_once()
    assert _stale_check(host).healthy
    assert host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=agent.id)).agent.state == (
        pb.AGENT_STATE_BUSY
    )

    # Still heartbeating, still on the same ticket, past the limit: hung.
    clock.advance(STALE * 0.5)
    _beat(host, agent.id, ticket_id)
    host.app.monitor.run_once()
    check = _stale_check(host)
    assert not check.healthy and check.consecutive_failure_count == 1
    assert agent.id in check.detail and ticket_id in check.detail

    gone = host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=agent.id)).agent
    assert gone.state == pb.AGENT_STATE_TERMINATED and ticket_id in gone.state_reason
    actions = host.stub.ListHealingActions(
        pb.ListHealingActionsRequest(tenant_id="acme", agent_id=agent.id)
    ).actions
    steps = {a.type: a for a in actions}
    assert {a.check for a in actions} == {pb.HEALTH_CHECK_STALE_TICKETS}
    assert len({a.incident_id for a in actions}) == 1
    assert steps[pb.HEALING_ACTION_TYPE_TERMINATE_AGENT].outcome == pb.HEALING_OUTCOME_SUCCEEDED
    assert list(steps[pb.HEALING_ACTION_TYPE_RELEASE_TICKETS].ticket_ids) == [ticket_id]
    replacement_id = steps[pb.HEALING_ACTION_TYPE_SPAWN_REPLACEMENT].replacement_agent_id
    replacement = host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=replacement_id)).agent
    assert replacement.replaces_agent_id == agent.id and replacement.state != pb.AGENT_STATE_TERMINATED
    assert len(_healed_events(host, agent.id)) == len(actions)

    # The lease went back through ticketing: the ticket is claimable again, one failure counted.
    ticket = own_ticketing.stub.GetTicket(tpb.GetTicketRequest(tenant_id="acme", ticket_id=ticket_id)).ticket
    assert ticket.state == tpb.TICKET_STATE_READY and ticket.failure_count == 1
    # The hung guest is told to stop at its next heartbeat.
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "terminated"):
        _beat(host, agent.id, ticket_id)

    # The log's time window: nothing was done before the incident, all of it by now.
    healed_at = clock.now()
    before = _actions_between(host, healed_at - STALE, healed_at - timedelta(seconds=1))
    assert before == [] and len(_actions_between(host, healed_at - STALE, healed_at + STALE)) == len(actions)

    # Healed: the next pass is healthy again and acts on nothing more.
    host.app.monitor.run_once()
    assert _stale_check(host).healthy


def test_a_guest_still_busy_after_its_ticket_was_cancelled_is_terminated_after_the_grace(
    make_vmhost: Callable[..., VmHostHarness], own_ticketing: TicketingHarness
) -> None:
    """A hostile guest ignores the stop its lease renewal tells it and keeps
    heartbeating BUSY on the cancelled ticket: vmhost gives it the grace
    period, then terminates and replaces it; the cancelled ticket stays so."""
    clock = ManualClock()
    host = make_vmhost(
        clock=clock,
        ticketing_target=own_ticketing.target,
        guest_command="sleep 600",
        default_driver="process",
        lease_lost_grace_seconds=60,
    )
    project = own_ticketing.stub.CreateProject(
        tpb.CreateProjectRequest(
            tenant_id="acme", name="p", tickets=[tpb.TicketSpec(key=k, name=k) for k in ("a", "b")]
        )
    )
    agent = host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme", template="default")).agent
    other = host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme", template="default")).agent
    mine = own_ticketing.stub.ClaimTicket(tpb.ClaimTicketRequest(tenant_id="acme", agent_id=agent.id)).ticket
    theirs = own_ticketing.stub.ClaimTicket(
        tpb.ClaimTicketRequest(tenant_id="acme", agent_id=other.id)
    ).ticket
    assert {mine.id, theirs.id} == {t.id for t in project.tickets}

    def beat_and_check() -> pb.HealthCheckStatus:
        _beat(host, agent.id, mine.id)
        _beat(host, other.id, theirs.id)
        host.app.monitor.run_once()
        return _stale_check(host)

    assert beat_and_check().healthy  # both hold their leases
    own_ticketing.stub.CancelTicket(
        tpb.CancelTicketRequest(tenant_id="acme", ticket_id=mine.id, operator="ops@acme", reason="wrong spec")
    )
    assert beat_and_check().healthy, "the grace starts: it may still be on its way out"
    clock.advance(timedelta(seconds=59))
    assert beat_and_check().healthy
    assert host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=agent.id)).agent.state == (
        pb.AGENT_STATE_BUSY
    )

    clock.advance(timedelta(seconds=2))
    check = beat_and_check()
    assert not check.healthy and agent.id in check.detail and "after losing its lease" in check.detail
    gone = host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=agent.id)).agent
    assert gone.state == pb.AGENT_STATE_TERMINATED and mine.id in gone.state_reason
    actions = host.stub.ListHealingActions(pb.ListHealingActionsRequest(tenant_id="acme", agent_id=agent.id))
    steps = {a.type: a for a in actions.actions}
    assert steps[pb.HEALING_ACTION_TYPE_SPAWN_REPLACEMENT].replacement_agent_id
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "terminated"):
        _beat(host, agent.id, mine.id)
    # The agent that holds its lease was never touched; the cancelled ticket stays cancelled.
    assert host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=other.id)).agent.state == (
        pb.AGENT_STATE_BUSY
    )
    ticket = own_ticketing.stub.GetTicket(tpb.GetTicketRequest(tenant_id="acme", ticket_id=mine.id)).ticket
    assert ticket.state == tpb.TICKET_STATE_CANCELLED
