"""vmhost's pure rules, without a database, a guest or a network."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_vmhost import wire
from swarm_vmhost.domain import (
    Agent,
    AgentRole,
    AgentState,
    DriverName,
    HealthPolicy,
    SpawnRequest,
    TerminateRequest,
    final_reason,
    silence,
    spawn_conflict,
    stale_ticket,
    terminate_conflict,
    ticket_since,
)
from swarmcommon.errors import InvalidArgument

AGENT_UUID = "0badc0de-0000-4000-8000-000000000000"
T0 = datetime(2030, 1, 1, tzinfo=UTC)
POLICY = HealthPolicy(
    heartbeat_interval=timedelta(seconds=5),
    missed_heartbeats=3,
    start_timeout=timedelta(seconds=60),
    stale_ticket=timedelta(hours=2),
)
AGENT = Agent(
    id="a1",
    tenant_id="acme",
    template="default",
    role=AgentRole.CODER,
    driver=DriverName.NETNS,
    state=AgentState.READY,
    address="10.88.0.2",
    reservation_id=None,
    ticket_id=None,
    ticket_since=None,
    state_reason=None,
    replaces_agent_id=None,
    handle=None,
    last_heartbeat_at=T0,
    created_at=T0,
    updated_at=T0,
    terminated_at=None,
)


def test_silence_counts_from_the_last_heartbeat_or_from_spawn() -> None:
    assert silence(AGENT, T0 + timedelta(seconds=15), POLICY) is None
    assert silence(AGENT, T0 + timedelta(seconds=16), POLICY) == "no heartbeat for 16.0s"
    never = dataclasses.replace(AGENT, last_heartbeat_at=None)
    assert silence(never, T0 + timedelta(seconds=60), POLICY) is None
    assert "no first heartbeat" in (silence(never, T0 + timedelta(seconds=61), POLICY) or "")


def test_a_ticket_clock_runs_while_the_heartbeats_name_the_same_ticket() -> None:
    later = T0 + timedelta(minutes=5)
    assert ticket_since(None, None, "t1", T0) == T0
    assert ticket_since("t1", T0, "t1", later) == T0
    assert ticket_since("t1", T0, "t2", later) == later  # a new ticket starts its own clock
    assert ticket_since("t1", T0, None, later) is None  # idle


def test_only_a_busy_agent_past_the_limit_on_one_ticket_is_stale() -> None:
    busy = dataclasses.replace(AGENT, state=AgentState.BUSY, ticket_id="t1", ticket_since=T0)
    assert stale_ticket(busy, T0 + timedelta(hours=2), POLICY) is None
    found = stale_ticket(busy, T0 + timedelta(hours=2, minutes=1), POLICY)
    assert found == "busy on ticket t1 for 2h01m (limit 2h00m) while still heartbeating"
    idle = dataclasses.replace(busy, state=AgentState.READY)
    assert stale_ticket(idle, T0 + timedelta(hours=5), POLICY) is None


def test_a_request_id_names_one_request() -> None:
    same = SpawnRequest("acme", "default", AgentRole.CODER, None, "r1")
    spawn_conflict(AGENT, same, DriverName.NETNS)  # the default driver is the one it got
    for other in (
        dataclasses.replace(same, template="other"),
        dataclasses.replace(same, role=AgentRole.REVIEWER),
        dataclasses.replace(same, driver=DriverName.PROCESS),
    ):
        with pytest.raises(InvalidArgument, match="request_id: 'r1' was used to spawn agent a1"):
            spawn_conflict(AGENT, other, DriverName.NETNS)
    first = TerminateRequest("acme", "a1", "done", "s1")
    terminate_conflict(first, first)
    with pytest.raises(InvalidArgument, match="request_id"):
        terminate_conflict(first, dataclasses.replace(first, agent_id="a2"))


def test_a_failure_keeps_its_own_reason_when_terminated() -> None:
    assert final_reason(AgentState.FAILED, "no heartbeat for 16s", "cleanup") == "no heartbeat for 16s"
    assert final_reason(AgentState.STOPPING, "asked", "terminated by request") == "terminated by request"


def test_every_state_and_kind_has_its_wire_value() -> None:
    assert {wire.STATE.to_proto(s) for s in AgentState} == set(pb.AgentState.values()) - {0}
    assert wire.STATE.to_proto(AgentState.STOPPING) == pb.AGENT_STATE_STOPPING
    with pytest.raises(InvalidArgument, match="state: a guest reports READY, BUSY or FAILED"):
        wire.heartbeat_from_proto(
            pb.HeartbeatRequest(tenant_id="acme", agent_id=AGENT_UUID, state=pb.AGENT_STATE_TERMINATED),
            "acme",
            AGENT_UUID,
        )
    with pytest.raises(InvalidArgument, match="check: unknown value 99"):
        wire.healing_filter_from_proto(pb.ListHealingActionsRequest(check=99))  # type: ignore[arg-type]
