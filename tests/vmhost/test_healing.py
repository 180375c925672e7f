"""Quota-limited spawning, concurrent address allocation, and self-healing:
a guest killed mid-ticket is noticed, its lease released, and a replacement
finishes the ticket exactly once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm.ticketing.v1 import ticketing_pb2_grpc as tpb_grpc
from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_ticketing import server as ticketing_server
from swarm_ticketing.config import Settings as TicketingSettings
from swarmcommon.grpcclient import channel
from tests.support.harness import BACKENDS, QuotaHarness
from tests.support.status import raises_status
from tests.support.waiting import eventually
from tests.vmhost.harness import VmHostHarness

pytestmark = BACKENDS


def _spawn(host: VmHostHarness, tenant: str, **kw: object) -> pb.Agent:
    return host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id=tenant, template="default", **kw)).agent  # type: ignore[arg-type]


def test_max_vms_refuses_the_fourth_spawn_and_frees_on_terminate(
    make_vmhost: Callable[..., VmHostHarness], quota: QuotaHarness
) -> None:
    quota.stub.CreateTenant(
        qpb.CreateTenantRequest(
            tenant_id="acme",
            plan=qpb.PLAN_PRO,
            overrides=[qpb.QuotaOverride(resource=qpb.RESOURCE_VMS, limit=3)],
        )
    )
    host = make_vmhost(quota_target=quota.target, guest_command="sleep 600", default_driver="process")
    agents = [_spawn(host, "acme") for _ in range(3)]
    assert all(a.reservation_id for a in agents)
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "VM limit reached (3/3)"):
        _spawn(host, "acme")
    assert len(host.stub.ListAgents(pb.ListAgentsRequest(tenant_id="acme")).agents) == 3  # nothing half-made
    host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agents[0].id))
    usage = {u.resource: u for u in quota.stub.GetUsage(qpb.GetUsageRequest(tenant_id="acme")).usages}
    assert usage[qpb.RESOURCE_VMS].used == 2
    assert _spawn(host, "acme").state == pb.AGENT_STATE_STARTING
    # A retried spawn (same request id) is the same agent and reserves nothing more.
    host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agents[1].id))
    first, retry = (_spawn(host, "acme", request_id="r-1") for _ in range(2))
    assert first.id == retry.id
    usage = {u.resource: u for u in quota.stub.GetUsage(qpb.GetUsageRequest(tenant_id="acme")).usages}
    assert usage[qpb.RESOURCE_VMS].used == 3


def test_concurrent_spawns_never_share_an_address(make_vmhost: Callable[..., VmHostHarness]) -> None:
    host = make_vmhost(guest_command="sleep 600", default_driver="process")
    with ThreadPoolExecutor(8) as pool:
        agents = list(pool.map(lambda i: _spawn(host, f"t{i % 3}"), range(16)))
    assert len({a.address for a in agents}) == 16


@pytest.fixture
def ticketing(db: str) -> Iterator[tuple[ticketing_server.Ticketing, tpb_grpc.TicketingServiceStub]]:
    # On every address: netns guests reach it through the bridge.
    app = ticketing_server.start(
        TicketingSettings(database_url=db, listen_address="0.0.0.0:0", reaper_interval_seconds=0)
    )
    ch = channel(f"127.0.0.1:{app.port}")
    yield app, tpb_grpc.TicketingServiceStub(ch)
    ch.close()
    app.stop(grace=1)


def test_a_guest_killed_mid_ticket_is_replaced_and_the_ticket_done_once(
    make_vmhost: Callable[..., VmHostHarness],
    ticketing: tuple[ticketing_server.Ticketing, tpb_grpc.TicketingServiceStub],
    tmp_path: Path,
) -> None:
    app, tickets = ticketing
    host = make_vmhost(
        database_url=f"sqlite:///{tmp_path / 'vmhost.db'}",  # ticketing has the parametrized one
        ticketing_target=f"0.0.0.0:{app.port}",
        guest_work="tests.vmhost.work:slow",
        default_driver="netns",
        monitor_interval_seconds=0.2,
    )
    project = tickets.CreateProject(
        tpb.CreateProjectRequest(tenant_id="acme", name="p", tickets=[tpb.TicketSpec(key="a", name="A")])
    )
    ticket_id = project.tickets[0].id
    first = _spawn(host, "acme")

    def busy() -> object:
        agent = host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=first.id)).agent
        return agent.state == pb.AGENT_STATE_BUSY and agent.ticket_id == ticket_id

    eventually(busy, timeout=30, what="the first guest working the ticket")
    handle = host.app.host.agents.get_any(first.id).handle
    assert handle is not None and handle.pid
    killed_at = time.monotonic()
    os.killpg(handle.pid, signal.SIGKILL)  # kill -9, mid-ticket

    def replaced() -> object:
        agent = host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=first.id)).agent
        return agent.state == pb.AGENT_STATE_TERMINATED

    eventually(replaced, timeout=30, what="the dead guest terminated")
    window = host.settings.heartbeat_interval_seconds * host.settings.missed_heartbeats
    assert time.monotonic() - killed_at < window + 2  # noticed within the heartbeat window

    def done() -> object:
        t = tickets.GetTicket(tpb.GetTicketRequest(tenant_id="acme", ticket_id=ticket_id)).ticket
        return t if t.state == tpb.TICKET_STATE_DONE else None

    final = eventually(done, timeout=40, what="the replacement finishing the ticket")
    assert isinstance(final, tpb.Ticket) and final.failure_count == 1  # the lost lease counted once

    actions = host.stub.ListHealingActions(
        pb.ListHealingActionsRequest(tenant_id="acme", agent_id=first.id)
    ).actions
    kinds = {a.type: a for a in actions}
    assert kinds[pb.HEALING_ACTION_TYPE_TERMINATE_AGENT].outcome == pb.HEALING_OUTCOME_SUCCEEDED
    assert list(kinds[pb.HEALING_ACTION_TYPE_RELEASE_TICKETS].ticket_ids) == [ticket_id]
    replacement_id = kinds[pb.HEALING_ACTION_TYPE_SPAWN_REPLACEMENT].replacement_agent_id
    assert len({a.incident_id for a in actions}) == 1
    replacement = host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=replacement_id)).agent
    assert replacement.replaces_agent_id == first.id and replacement.state != pb.AGENT_STATE_TERMINATED

    history = tickets.ListTicketEvents(
        tpb.ListTicketEventsRequest(tenant_id="acme", ticket_id=ticket_id)
    ).events
    completions = [e for e in history if e.event_type == "completed"]
    assert (
        len(completions) == 1 and completions[0].actor_id == replacement_id
    )  # done exactly once, by the replacement
    report = host.stub.GetHealingReport(pb.GetHealingReportRequest(tenant_id="acme"))
    counted = {(c.type, c.outcome): c.count for c in report.action_counts}
    assert counted[(pb.HEALING_ACTION_TYPE_SPAWN_REPLACEMENT, pb.HEALING_OUTCOME_SUCCEEDED)] == 1


def test_concurrent_retries_of_one_spawn_make_one_agent_and_one_reservation(
    make_vmhost: Callable[..., VmHostHarness], quota: QuotaHarness
) -> None:
    quota.stub.CreateTenant(qpb.CreateTenantRequest(tenant_id="acme", plan=qpb.PLAN_PRO))
    host = make_vmhost(quota_target=quota.target, guest_command="sleep 600", default_driver="process")
    with ThreadPoolExecutor(6) as pool:
        agents = list(pool.map(lambda _: _spawn(host, "acme", request_id="spawn-once"), range(6)))
    assert len({a.id for a in agents}) == 1
    usage = {u.resource: u for u in quota.stub.GetUsage(qpb.GetUsageRequest(tenant_id="acme")).usages}
    assert usage[qpb.RESOURCE_VMS].used == 1
    assert len(host.stub.ListAgents(pb.ListAgentsRequest(tenant_id="acme")).agents) == 1
