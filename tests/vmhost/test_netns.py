"""netns guests on a real bridge: distinct addresses, the control plane
reachable, other guests not, devices gone on terminate, leftovers reconciled."""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from pyroute2 import IPRoute, netns

from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_vmhost import firewall, network
from tests.support.harness import BACKENDS
from tests.support.waiting import eventually
from tests.vmhost.harness import REPO, VmHostHarness
from tests.vmhost.listen import PORT

pytestmark = BACKENDS

LISTEN = f"{sys.executable} {REPO / 'tests' / 'vmhost' / 'listen.py'}"


@pytest.fixture
def bridge_server(make_vmhost: Callable[..., VmHostHarness]) -> Iterator[tuple[VmHostHarness, int]]:
    """vmhost running listening guests, and a TCP server guests reach on the
    bridge address, standing in for the control plane (the bridge's filter
    lets guests reach its port: an extra host port)."""
    server = socket.create_server(("0.0.0.0", 0))
    port = server.getsockname()[1]
    host = make_vmhost(guest_command=LISTEN, default_driver="netns", guest_host_ports_extra=str(port))

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    yield host, port
    server.close()


def _spawn(host: VmHostHarness, tenant: str = "acme", **kw: object) -> pb.Agent:
    return host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id=tenant, template="default", **kw)).agent  # type: ignore[arg-type]


def _reachable_from_host(address: str, port: int) -> bool:
    """The guest program may still be starting (four start at once on a busy
    machine): wait for its port up to 30 s."""

    def listening() -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex((address, port)) == 0

    try:
        return eventually(listening, timeout=30, interval=0.1, what=f"{address}:{port} listening")
    except AssertionError:
        return False


def test_guests_get_distinct_addresses_reach_the_control_plane_and_not_each_other(
    bridge_server: tuple[VmHostHarness, int],
) -> None:
    host, port = bridge_server
    with ThreadPoolExecutor(4) as pool:  # concurrent spawns
        agents = list(pool.map(lambda _: _spawn(host), range(4)))
    addresses = [a.address for a in agents]
    assert len(set(addresses)) == 4
    assert all(ipaddress.IPv4Address(a) in host.bridge.network for a in addresses)
    assert host.bridge.address not in addresses
    assert all(a.driver == pb.DRIVER_NETNS and a.state == pb.AGENT_STATE_STARTING for a in agents)
    for a in agents:
        assert network.reach(host.bridge, a.id, host.bridge.address, port), (
            f"{a.address} cannot reach the bridge"
        )
        assert _reachable_from_host(a.address, PORT)  # its own port is up (the host may reach it)
    first, second = agents[0], agents[1]
    # Isolated bridge ports: no guest reaches another guest's port.
    assert not network.reach(host.bridge, first.id, second.address, PORT)
    assert not network.reach(host.bridge, second.id, first.address, PORT)


def test_terminate_removes_the_guest_and_frees_its_address(bridge_server: tuple[VmHostHarness, int]) -> None:
    host, _ = bridge_server
    agent = _spawn(host)
    ns = network.netns_name(host.bridge, agent.id)
    assert ns in netns.listnetns()
    done = host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agent.id)).agent
    assert done.state == pb.AGENT_STATE_TERMINATED and done.address == ""
    assert ns not in netns.listnetns()
    with IPRoute() as ip:
        assert ip.link_lookup(ifname=network.host_veth(agent.id)) == []
    again = host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agent.id)).agent
    assert again.state == pb.AGENT_STATE_TERMINATED  # idempotent
    assert _spawn(host).address == agent.address  # back in the pool


def test_a_guest_cut_off_the_bridge_is_detected_and_repaired(
    bridge_server: tuple[VmHostHarness, int],
) -> None:
    host, port = bridge_server
    agent = _spawn(host)
    assert network.reach(host.bridge, agent.id, host.bridge.address, port)
    with IPRoute() as ip:  # cut it off: its host-side device goes away
        ip.link("del", index=ip.link_lookup(ifname=network.host_veth(agent.id))[0])
    assert not network.reach(host.bridge, agent.id, host.bridge.address, port)
    host.app.monitor.run_once()
    assert not host.app.monitor.status["network"].healthy
    actions = host.stub.ListHealingActions(pb.ListHealingActionsRequest(tenant_id="acme")).actions
    rebuilt = [a for a in actions if a.type == pb.HEALING_ACTION_TYPE_REBUILD_NETWORK]
    assert [(a.agent_id, a.outcome) for a in rebuilt] == [(agent.id, pb.HEALING_OUTCOME_SUCCEEDED)]
    assert network.reach(host.bridge, agent.id, host.bridge.address, port)
    host.app.monitor.run_once()
    assert host.app.monitor.status["network"].healthy


def test_restart_removes_what_no_agent_owns(make_vmhost: Callable[..., VmHostHarness]) -> None:
    first = make_vmhost(guest_command=LISTEN, default_driver="netns")
    orphan = "0badc0de-0000-4000-8000-000000000000"
    network.attach(orphan, first.bridge, str(first.bridge.network.network_address + 200))
    kept = _spawn(first)
    second = make_vmhost(guest_command=LISTEN, default_driver="netns")
    assert second.app.reconciled == [network.short_id(orphan)]
    assert set(firewall.pins(first.bridge)) == {kept.id}  # the orphan's pin went with it
    assert network.netns_name(first.bridge, orphan) not in netns.listnetns()
    assert network.netns_name(first.bridge, kept.id) in netns.listnetns()  # a live agent is kept


def test_drivers_are_described_and_bad_input_refused(make_vmhost: Callable[..., VmHostHarness]) -> None:
    import grpc

    from tests.support.status import raises_status

    host = make_vmhost(guest_command=LISTEN, guest_image_dir="/nonexistent/guest-image")
    drivers = {d.driver: d for d in host.stub.ListDrivers(pb.ListDriversRequest()).drivers}
    assert drivers[pb.DRIVER_NETNS].available and not drivers[pb.DRIVER_NETNS].is_default
    assert drivers[pb.DRIVER_GVISOR].available and drivers[pb.DRIVER_GVISOR].is_default  # the strongest here
    assert drivers[pb.DRIVER_PROCESS].available
    assert not drivers[pb.DRIVER_QEMU].available and drivers[pb.DRIVER_QEMU].reason
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "tenant_id"):
        _spawn(host, tenant="")
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "driver"):
        _spawn(host, driver=99)
    assert "guest-image" in drivers[pb.DRIVER_QEMU].reason or "qemu" in drivers[pb.DRIVER_QEMU].reason
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "qemu"):
        _spawn(host, driver=pb.DRIVER_QEMU)
    agent = _spawn(host)
    with raises_status(grpc.StatusCode.NOT_FOUND, agent.id):
        host.stub.GetAgent(pb.GetAgentRequest(tenant_id="other", agent_id=agent.id))
    with raises_status(grpc.StatusCode.NOT_FOUND, agent.id):
        host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="other", agent_id=agent.id))
    assert list(host.stub.ListAgents(pb.ListAgentsRequest(tenant_id="other")).agents) == []
    assert [a.id for a in host.stub.ListAgents(pb.ListAgentsRequest(tenant_id="acme")).agents] == [agent.id]
    host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agent.id))
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "terminated"):
        host.stub.Heartbeat(
            pb.HeartbeatRequest(tenant_id="acme", agent_id=agent.id, state=pb.AGENT_STATE_READY)
        )
    assert len(host.stub.ListAgents(pb.ListAgentsRequest(tenant_id="acme")).agents) == 0
    listed = host.stub.ListAgents(
        pb.ListAgentsRequest(tenant_id="acme", state=pb.AGENT_STATE_TERMINATED)
    ).agents
    assert [a.id for a in listed] == [agent.id]
