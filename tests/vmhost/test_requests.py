"""request_id on the mutating calls (AIP-155): a retry returns the first
answer and writes nothing new; a request_id reused for another request is
refused. Heartbeat has none: it is naturally repeatable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import sqlalchemy as sa

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_vmhost import tables
from tests.support.harness import BACKENDS, QuotaHarness
from tests.support.status import raises_status
from tests.vmhost.harness import VmHostHarness

pytestmark = BACKENDS


def _written(host: VmHostHarness, quota: QuotaHarness) -> dict[str, Any]:
    """Everything a call could have written: vmhost's rows and the tenant's VM usage."""
    found: dict[str, Any] = {}
    with host.app.db.engine.connect() as conn:
        for table in tables.metadata.sorted_tables:
            rows = conn.execute(sa.select(table)).all()
            found[table.name] = sorted(repr(tuple(r)) for r in rows)
    usage = quota.stub.GetUsage(qpb.GetUsageRequest(tenant_id="acme")).usages
    found["vms_used"] = next(u.used for u in usage if u.resource == qpb.RESOURCE_VMS)
    return found


def _host(make_vmhost: Callable[..., VmHostHarness], quota: QuotaHarness) -> VmHostHarness:
    quota.stub.CreateTenant(qpb.CreateTenantRequest(tenant_id="acme", plan=qpb.PLAN_PRO))
    return make_vmhost(quota_target=quota.target, guest_command="sleep 600", default_driver="process")


def _spawn(host: VmHostHarness, request_id: str, template: str = "default") -> pb.Agent:
    return host.stub.SpawnAgent(
        pb.SpawnAgentRequest(tenant_id="acme", template=template, request_id=request_id)
    ).agent


def _terminate(host: VmHostHarness, agent_id: str, request_id: str, reason: str = "done") -> pb.Agent:
    return host.stub.TerminateAgent(
        pb.TerminateAgentRequest(tenant_id="acme", agent_id=agent_id, reason=reason, request_id=request_id)
    ).agent


def test_a_retried_spawn_returns_the_first_agent_and_writes_nothing(
    make_vmhost: Callable[..., VmHostHarness], quota: QuotaHarness
) -> None:
    host = _host(make_vmhost, quota)
    first = _spawn(host, "spawn-1")
    before = _written(host, quota)
    assert before["vms_used"] == 1
    retry = _spawn(host, "spawn-1")
    assert (retry.id, retry.reservation_id, retry.address, retry.create_time) == (
        first.id,
        first.reservation_id,
        first.address,
        first.create_time,
    )
    assert _written(host, quota) == before  # no second agent, no second reservation
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id", first.id):
        _spawn(host, "spawn-1", template="other")  # the same id for another request
    assert _written(host, quota) == before


def test_a_retried_terminate_returns_the_first_answer_and_writes_nothing(
    make_vmhost: Callable[..., VmHostHarness], quota: QuotaHarness
) -> None:
    host = _host(make_vmhost, quota)
    agent, other = _spawn(host, "a"), _spawn(host, "b")
    done = _terminate(host, agent.id, "stop-1")
    assert done.state == pb.AGENT_STATE_TERMINATED
    before = _written(host, quota)
    assert before["vms_used"] == 1
    assert _terminate(host, agent.id, "stop-1") == done
    assert _written(host, quota) == before
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id", agent.id):
        _terminate(host, other.id, "stop-1")  # the same id for another agent
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id"):
        _terminate(host, agent.id, "stop-1", reason="another reason")
    assert _written(host, quota) == before
    still = host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=other.id)).agent
    assert still.state != pb.AGENT_STATE_TERMINATED
