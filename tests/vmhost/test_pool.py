"""Target pools: SetAgentPool/GetAgentPool and the reconciler that keeps a
tenant's live agents of each role at its target — it reaches the target,
replaces what died, retires idle surplus oldest first, never overshoots with
two passes at once, and takes a quota refusal as "try again next pass"."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_vmhost.pool import PoolReconciler
from tests.support.harness import BACKENDS, QuotaHarness
from tests.support.status import raises_status
from tests.support.waiting import eventually
from tests.vmhost.harness import VmHostHarness

pytestmark = BACKENDS

CODER, REVIEWER = pb.AGENT_ROLE_CODER, pb.AGENT_ROLE_REVIEWER
LIVE = {pb.AGENT_STATE_STARTING, pb.AGENT_STATE_READY, pb.AGENT_STATE_BUSY}


def _host(make_vmhost: Callable[..., VmHostHarness], **overrides: object) -> VmHostHarness:
    return make_vmhost(guest_command="sleep 600", default_driver="process", **overrides)


def _set(host: VmHostHarness, tenant: str, **counts: int) -> pb.AgentPool:
    targets = [
        pb.AgentPoolTarget(role=pb.AgentRole.Value(f"AGENT_ROLE_{r.upper()}"), count=n)
        for r, n in counts.items()
    ]
    return host.stub.SetAgentPool(pb.SetAgentPoolRequest(tenant_id=tenant, targets=targets)).pool


def _live(host: VmHostHarness, tenant: str, role: int | None = None) -> list[pb.Agent]:
    agents = host.stub.ListAgents(pb.ListAgentsRequest(tenant_id=tenant, page_size=1000)).agents
    return [a for a in agents if a.state in LIVE and (role is None or a.role == role)]


def _pass(host: VmHostHarness) -> None:
    host.app.pooler.run_once()


def _heartbeat(host: VmHostHarness, tenant: str, agents: list[pb.Agent], ticket_id: str = "") -> None:
    """What each guest's runtime would say: idle (READY), or BUSY on `ticket_id`."""
    state = pb.AGENT_STATE_BUSY if ticket_id else pb.AGENT_STATE_READY
    for a in agents:
        host.stub.Heartbeat(
            pb.HeartbeatRequest(tenant_id=tenant, agent_id=a.id, state=state, ticket_id=ticket_id)
        )


def test_the_pool_reaches_its_target_and_stays_there(make_vmhost: Callable[..., VmHostHarness]) -> None:
    host = _host(make_vmhost)
    pool = _set(host, "acme", coder=3, reviewer=1)
    assert [(t.role, t.count, t.live_count) for t in pool.targets] == [(CODER, 3, 0), (REVIEWER, 1, 0)]
    assert pool.max_count == host.settings.pool_max_per_role and pool.HasField("update_time")
    _pass(host)
    assert len(_live(host, "acme", CODER)) == 3 and len(_live(host, "acme", REVIEWER)) == 1
    before = {a.id for a in _live(host, "acme")}
    _pass(host)
    _pass(host)
    assert {a.id for a in _live(host, "acme")} == before  # at the target: nothing spawned or retired
    got = host.stub.GetAgentPool(pb.GetAgentPoolRequest(tenant_id="acme")).pool
    assert [(t.role, t.count, t.live_count, t.detail) for t in got.targets] == [
        (CODER, 3, 3, ""),
        (REVIEWER, 1, 1, ""),
    ]
    # Another tenant has no pool and none of these agents.
    assert not host.stub.GetAgentPool(pb.GetAgentPoolRequest(tenant_id="other")).pool.targets
    assert _live(host, "other") == []


def test_an_agent_that_died_or_was_stopped_is_replaced_once(
    make_vmhost: Callable[..., VmHostHarness],
) -> None:
    host = _host(make_vmhost)
    _set(host, "acme", coder=2)
    _pass(host)
    first, second = _live(host, "acme")
    # Stopped by hand: the pool spawns one in its place.
    host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=first.id))
    _pass(host)
    after_stop = _live(host, "acme")
    assert len(after_stop) == 2 and first.id not in {a.id for a in after_stop}
    # Died: self-healing replaces it; the pool then sees its target met and adds nothing.
    record = host.app.host.agents.get("acme", second.id)
    assert record.handle is not None and record.handle.pid is not None
    os.killpg(record.handle.pid, signal.SIGKILL)

    def healed() -> bool:
        host.app.monitor.run_once()
        got = host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=second.id)).agent
        return bool(got.state == pb.AGENT_STATE_TERMINATED)

    eventually(healed, timeout=20, what="the dead guest healed")
    _pass(host)
    live = _live(host, "acme")
    assert len(live) == 2 and second.id not in {a.id for a in live}
    assert any(a.replaces_agent_id == second.id for a in live)  # healing's replacement, and no extra


def test_a_lower_target_retires_idle_agents_oldest_first_and_spares_busy_ones(
    make_vmhost: Callable[..., VmHostHarness],
) -> None:
    host = _host(make_vmhost)
    _set(host, "acme", coder=3, reviewer=1)
    _pass(host)
    oldest, middle, newest = sorted(_live(host, "acme", CODER), key=lambda a: a.create_time.ToDatetime())
    # The oldest is at work: it is not surplus while busy. (A guest that never
    # heartbeated is STARTING, not idle, and is not retired either.)
    _heartbeat(host, "acme", [middle, newest])
    _heartbeat(host, "acme", [oldest], ticket_id="t-1")
    _set(host, "acme", coder=2, reviewer=1)
    _pass(host)
    assert {a.id for a in _live(host, "acme", CODER)} == {oldest.id, newest.id}  # the oldest idle one went
    retired = host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=middle.id)).agent
    assert retired.state == pb.AGENT_STATE_TERMINATED and "surplus" in retired.state_reason
    _set(host, "acme", coder=0, reviewer=1)
    _pass(host)
    assert [a.id for a in _live(host, "acme", CODER)] == [oldest.id]  # busy: left to finish
    _heartbeat(host, "acme", [oldest])
    _pass(host)
    assert _live(host, "acme", CODER) == []
    assert len(_live(host, "acme", REVIEWER)) == 1  # another role, untouched
    # A role the pool stops listing is no longer managed: its agents stay.
    _set(host, "acme")
    _pass(host)
    assert len(_live(host, "acme", REVIEWER)) == 1


def test_two_concurrent_passes_never_spawn_more_than_the_missing_number(
    make_vmhost: Callable[..., VmHostHarness], quota: QuotaHarness
) -> None:
    quota.stub.CreateTenant(qpb.CreateTenantRequest(tenant_id="acme", plan=qpb.PLAN_ENTERPRISE))
    host = _host(make_vmhost, quota_target=quota.target)
    # Two reconcilers on one database, as two vmhost processes would be.
    passes = [host.app.pooler, PoolReconciler(host.app.host, host.app.pooler.store, 0)]
    _set(host, "acme", coder=5)
    for round_ in range(3):
        if round_:  # some die between rounds: the passes must add exactly those back
            for agent in _live(host, "acme")[: round_ + 1]:
                host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agent.id))
        barrier = threading.Barrier(len(passes))
        errors: list[BaseException] = []
        threads = [threading.Thread(target=_together, args=(p, barrier, errors)) for p in passes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(_live(host, "acme")) == 5, f"round {round_}"
    usage = {u.resource: u for u in quota.stub.GetUsage(qpb.GetUsageRequest(tenant_id="acme")).usages}
    assert usage[qpb.RESOURCE_VMS].used == 5  # one reservation per live agent, none leaked


def _together(reconciler: PoolReconciler, barrier: threading.Barrier, errors: list[BaseException]) -> None:
    """One pass, started at the same moment as the others'."""
    try:
        barrier.wait()
        reconciler.run_once()
    except BaseException as exc:  # noqa: BLE001 - the test asserts there were none
        errors.append(exc)


def test_a_spawn_quota_refuses_is_retried_on_the_next_pass(
    make_vmhost: Callable[..., VmHostHarness], quota: QuotaHarness
) -> None:
    def vm_limit(limit: int) -> list[qpb.QuotaOverride]:
        return [qpb.QuotaOverride(resource=qpb.RESOURCE_VMS, limit=limit)]

    quota.stub.CreateTenant(
        qpb.CreateTenantRequest(tenant_id="acme", plan=qpb.PLAN_PRO, overrides=vm_limit(2))
    )
    host = _host(make_vmhost, quota_target=quota.target)
    _set(host, "acme", coder=3)
    _pass(host)
    _pass(host)  # refused again: no crash, nothing half-made
    assert len(_live(host, "acme")) == 2
    assert Counter(a.state for a in host.stub.ListAgents(pb.ListAgentsRequest(tenant_id="acme")).agents) == {
        pb.AGENT_STATE_STARTING: 2
    }
    (target,) = host.stub.GetAgentPool(pb.GetAgentPoolRequest(tenant_id="acme")).pool.targets
    assert (target.live_count, target.count) == (2, 3) and "VM limit reached (2/2)" in target.detail
    quota.stub.UpdateTenant(
        qpb.UpdateTenantRequest(
            tenant_id="acme",
            tenant=qpb.Tenant(overrides=vm_limit(3)),
            update_mask=FieldMask(paths=["overrides"]),
        )
    )
    _pass(host)
    assert len(_live(host, "acme")) == 3
    (target,) = host.stub.GetAgentPool(pb.GetAgentPoolRequest(tenant_id="acme")).pool.targets
    assert (target.live_count, target.detail) == (3, "")


@pytest.mark.parametrize(
    ("targets", "fragment"),
    [
        pytest.param([pb.AgentPoolTarget(role=CODER, count=51)], "targets[0].count", id="over-max"),
        pytest.param([pb.AgentPoolTarget(role=CODER, count=-1)], "targets[0].count", id="negative"),
        pytest.param([pb.AgentPoolTarget(count=1)], "targets[0].role", id="no-role"),
        pytest.param([pb.AgentPoolTarget(role=99, count=1)], "targets[0].role", id="unknown-role"),
        pytest.param(
            [pb.AgentPoolTarget(role=CODER, count=1), pb.AgentPoolTarget(role=CODER, count=2)],
            "targets[1].role",
            id="repeated-role",
        ),
    ],
)
def test_a_bad_pool_is_refused_and_writes_nothing(
    make_vmhost: Callable[..., VmHostHarness], targets: list[pb.AgentPoolTarget], fragment: str
) -> None:
    host = _host(make_vmhost, pool_max_per_role=50)
    _set(host, "acme", reviewer=1)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, fragment):
        host.stub.SetAgentPool(pb.SetAgentPoolRequest(tenant_id="acme", targets=targets))
    got = host.stub.GetAgentPool(pb.GetAgentPoolRequest(tenant_id="acme")).pool
    assert [(t.role, t.count) for t in got.targets] == [(REVIEWER, 1)]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "tenant_id"):
        host.stub.GetAgentPool(pb.GetAgentPoolRequest())


def test_the_loop_keeps_the_pool_without_being_asked(make_vmhost: Callable[..., VmHostHarness]) -> None:
    host = _host(make_vmhost, monitor_interval_seconds=0.2)
    _set(host, "acme", coder=2)
    eventually(lambda: len(_live(host, "acme")) == 2, timeout=20, what="the pool filled by its loop")
