"""vmhost's /metrics with the process driver: agents by state, counted in
its database at each scrape, and self-healing steps by check, action and
outcome after a guest is killed (root required: vmhost makes its bridge)."""

from __future__ import annotations

import ipaddress
import os
import signal
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm.vmhost.v1 import vmhost_pb2_grpc as pb_grpc
from swarm_vmhost import network
from swarm_vmhost import server as vmhost_server
from swarm_vmhost.config import Settings
from swarmcommon.grpcclient import channel
from tests.metrics.scrape import Scrape, assert_bounded, metrics_url, scrape
from tests.support.waiting import eventually

# The range and lock every test bridge on this host is claimed under (as tests/vmhost's).
TEST_POOL = ipaddress.IPv4Network("10.213.0.0/16")
BRIDGE_LOCK = Path(tempfile.gettempdir()) / "swarm-vmhost-test-bridges.lock"
STATES = ("starting", "ready", "busy", "failed", "stopping", "terminated")
TENANT = "acme"


@pytest.fixture
def vmhost(tmp_path: Path) -> Iterator[tuple[vmhost_server.VmHostApp, pb_grpc.VmHostServiceStub]]:
    if os.geteuid() != 0:  # pragma: no cover - CI runs as root
        pytest.fail("vmhost makes a bridge: run as root", pytrace=False)
    bridge = network.claim_bridge(TEST_POOL, "swt", BRIDGE_LOCK)
    try:
        app = vmhost_server.start(
            Settings(
                database_url=f"sqlite:///{tmp_path / 'vmhost.db'}",
                listen_address="127.0.0.1:0",
                bridge_name=bridge.name,
                bridge_cidr=str(bridge.network),
                workroot=str(tmp_path / "vmhost"),
                monitor_interval_seconds=0,  # the test runs the monitor's pass itself
                guest_command="sleep 600",
                default_driver="process",
                metrics_port=0,
            )
        )
        ch = channel(f"127.0.0.1:{app.port}")
        try:
            yield app, pb_grpc.VmHostServiceStub(ch)
        finally:
            ch.close()
            app.stop(grace=1)
    finally:
        network.remove_bridge(bridge)


def by_state(stub: pb_grpc.VmHostServiceStub) -> Counter[str]:
    """The tenant's agents by state, as the API lists them (terminated ones only when asked)."""
    listed = [
        *stub.ListAgents(pb.ListAgentsRequest(tenant_id=TENANT, page_size=100)).agents,
        *stub.ListAgents(
            pb.ListAgentsRequest(tenant_id=TENANT, state=pb.AGENT_STATE_TERMINATED, page_size=100)
        ).agents,
    ]
    return Counter(pb.AgentState.Name(a.state).removeprefix("AGENT_STATE_").lower() for a in listed)


def gauge(result: Scrape) -> Counter[str]:
    return Counter({s: int(result.value("swarm_vmhost_agents", state=s)) for s in STATES})


def test_agents_by_state_and_healing_steps(
    vmhost: tuple[vmhost_server.VmHostApp, pb_grpc.VmHostServiceStub],
) -> None:
    app, stub = vmhost
    url = metrics_url(app.handle.metrics_port)
    before = scrape(url)
    assert before.families["swarm_vmhost_agents"] == "gauge"
    assert gauge(before) == Counter(dict.fromkeys(STATES, 0))  # every state, 0 on a new host

    spawned = [
        stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id=TENANT, template="default")).agent for _ in range(3)
    ]
    stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id=TENANT, agent_id=spawned[0].id))
    listed = by_state(stub)
    assert listed["terminated"] == 1 and sum(listed.values()) == 3
    assert +gauge(scrape(url)) == listed

    agent = app.host.agents.get_any(spawned[1].id)
    handle, driver = agent.handle, app.host.drivers[agent.driver]
    assert handle is not None and handle.pid
    os.killpg(handle.pid, signal.SIGKILL)
    eventually(lambda: not app.host.guest_alive(driver, handle), what="the guest gone")
    app.monitor.run_once()  # notices the dead guest: fail, terminate, replace
    after = scrape(url)
    listed = by_state(stub)
    assert listed["terminated"] == 2 and sum(listed.values()) == 4  # the replacement
    assert +gauge(after) == listed

    def healed(**labels: str) -> float:
        name = "swarm_vmhost_healing_actions_total"
        return after.value(name, check="vm_heartbeat", **labels) - before.value(
            name, check="vm_heartbeat", **labels
        )

    assert healed(action="terminate_agent", outcome="succeeded") == 1
    assert healed(action="spawn_replacement", outcome="succeeded") == 1
    assert_bounded(after)
    assert not [n for n in after.names() if n.startswith("swarm_") and not n.startswith("swarm_vmhost_")]
