"""qemu guests: restored from a snapshot onto the bridge, each with its own
address and MAC, heartbeating vmhost across the bridge from the agent
runtime inside the VM, and still heartbeating when another is terminated.
Skips, with the driver's own reason, only where qemu or the guest image is
missing (`make guest-image` builds it; `make test` does that first)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import grpc
import pytest
from pyroute2 import IPRoute

from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_vmhost import firewall, network
from swarm_vmhost.domain import DriverName
from swarm_vmhost.drivers.qemu import tap_name
from tests.support.status import error_info, raises_status
from tests.support.waiting import eventually
from tests.vmhost.harness import REPO, VmHostHarness

IMAGE = REPO / "build" / "guest"


def _agent(host: VmHostHarness, agent_id: str) -> pb.Agent:
    return host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=agent_id)).agent


def _heartbeat_at(host: VmHostHarness, agent_id: str) -> datetime | None:
    agent = host.app.host.agents.get_any(agent_id)
    return agent.last_heartbeat_at if agent.state == "ready" else None


def _neighbour_mac(address: str) -> str | None:
    """The MAC the host has learnt for `address` (the guest answered ARP from it)."""
    with IPRoute() as ip:
        for neighbour in ip.get_neighbours(dst=address):
            mac = neighbour.get_attr("NDA_LLADDR")
            if mac:
                return str(mac)
    return None


def _link_mac(name: str) -> str:
    with IPRoute() as ip:
        return str(ip.get_links(ip.link_lookup(ifname=name)[0])[0].get_attr("IFLA_ADDRESS"))


def test_guests_restored_from_a_snapshot_heartbeat_across_the_bridge(
    make_vmhost: Callable[..., VmHostHarness],
) -> None:
    host = make_vmhost(guest_image_dir=str(IMAGE), default_driver="process", heartbeat_interval_seconds=1)
    qemu = host.app.host.drivers[DriverName.QEMU]
    if (why := qemu.probe()) is not None:
        pytest.skip(why)
    drivers = {d.driver: d for d in host.stub.ListDrivers(pb.ListDriversRequest()).drivers}
    assert drivers[pb.DRIVER_QEMU].available and not drivers[pb.DRIVER_QEMU].is_default
    qemu.ensure_template()  # once per image (kept next to it): the spawns below restore it

    agents = [
        host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme", driver=pb.DRIVER_QEMU)).agent
        for _ in range(2)
    ]
    assert len({a.address for a in agents}) == 2
    for a in agents:
        assert a.driver == pb.DRIVER_QEMU
        # Ready only once the runtime inside the VM heartbeats (a live QEMU is not enough).
        assert a.state == pb.AGENT_STATE_STARTING
        handle = host.app.host.agents.get_any(a.id).handle
        assert handle is not None and handle.data["accel"] in ("tcg", "kvm")
        assert 0 < float(handle.data["restore_ms"]) <= float(handle.data["up_ms"])
    for a in agents:
        eventually(
            lambda a=a: _agent(host, a.id).state == pb.AGENT_STATE_READY,
            timeout=120,
            interval=0.1,
            what="a heartbeat from inside the VM",
        )
        # Restored copies of one snapshot, each on the bridge with its own MAC,
        # to which (and to its address) the bridge filter pins its port.
        assert _neighbour_mac(a.address) == network.guest_mac(a.id)
        assert firewall.pins(host.bridge)[a.id] == [tap_name(a.id)]

    host.app.monitor.run_once()
    assert all(_agent(host, a.id).state == pb.AGENT_STATE_READY for a in agents)
    # The guests' gateway keeps its own fixed MAC while guests come and go
    # (not a port's, which a bridge would otherwise take and drop with it).
    assert _link_mac(host.bridge.name) == network.bridge_mac(host.bridge)
    gone = host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agents[0].id)).agent
    assert gone.state == pb.AGENT_STATE_TERMINATED
    assert _link_mac(host.bridge.name) == network.bridge_mac(host.bridge)
    first = host.app.host.agents.get_any(agents[0].id).handle
    assert first is not None and not qemu.alive(first)
    with IPRoute() as ip:
        assert ip.link_lookup(ifname=tap_name(agents[0].id)) == []
        assert ip.link_lookup(ifname=tap_name(agents[1].id)) != []
    assert set(firewall.pins(host.bridge)) == {agents[1].id}
    # The other one is untouched: it keeps heartbeating.
    before = _heartbeat_at(host, agents[1].id)
    assert before is not None
    eventually(
        lambda: (_heartbeat_at(host, agents[1].id) or before) > before,
        timeout=30,
        interval=0.5,
        what="the other guest's next heartbeat",
    )


def test_a_guest_program_other_than_the_runtime_is_refused_and_nothing_is_left(
    make_vmhost: Callable[..., VmHostHarness],
) -> None:
    host = make_vmhost(guest_image_dir=str(IMAGE), default_driver="qemu", guest_command="sleep 600")
    qemu = host.app.host.drivers[DriverName.QEMU]
    if (why := qemu.probe()) is not None:
        pytest.skip(why)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "python -m swarmagent.guest") as caught:
        host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme"))
    assert error_info(caught[0]).reason == "GUEST_COMMAND_UNSUPPORTED"
    assert host.stub.ListAgents(pb.ListAgentsRequest(tenant_id="acme")).agents == []
    ended = pb.ListAgentsRequest(tenant_id="acme", state=pb.AGENT_STATE_TERMINATED)
    (agent,) = host.stub.ListAgents(ended).agents
    assert "swarmagent.guest" in agent.state_reason
    with IPRoute() as ip:
        assert ip.link_lookup(ifname=tap_name(agent.id)) == []
    assert firewall.pins(host.bridge) == {}
