"""qemu guests: restored from a snapshot onto the bridge, answering there.
Skips, with the driver's own reason, only where qemu or the guest image is
missing (`make guest-image` builds it; `make test` does that first)."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest
from pyroute2 import IPRoute

from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_vmhost.domain import DriverName
from swarm_vmhost.drivers.qemu import mac_of, tap_name
from tests.vmhost.harness import REPO, VmHostHarness

IMAGE = REPO / "build" / "guest"


def _answer(address: str) -> str:
    return urllib.request.urlopen(f"http://{address}:8080/", timeout=10).read().decode()


def test_guests_restored_from_a_snapshot_answer_on_the_bridge(
    make_vmhost: Callable[..., VmHostHarness],
) -> None:
    host = make_vmhost(guest_image_dir=str(IMAGE), default_driver="process")
    qemu = host.app.host.drivers[DriverName.QEMU]
    if (why := qemu.probe()) is not None:
        pytest.skip(why)
    drivers = {d.driver: d for d in host.stub.ListDrivers(pb.ListDriversRequest()).drivers}
    assert drivers[pb.DRIVER_QEMU].available and not drivers[pb.DRIVER_QEMU].is_default

    agents = [
        host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme", driver=pb.DRIVER_QEMU)).agent
        for _ in range(2)
    ]
    assert len({a.address for a in agents}) == 2
    for a in agents:
        assert a.driver == pb.DRIVER_QEMU and a.state == pb.AGENT_STATE_READY  # up means ready
        assert _answer(a.address) == f"swarm guest {a.address}/{host.bridge.prefix_len}\n"
        handle = host.app.host.agents.get_any(a.id).handle
        assert handle is not None and handle.data["accel"] in ("tcg", "kvm")
        assert 0 < float(handle.data["restore_ms"]) <= float(handle.data["up_ms"])
    assert len({mac_of(a.id) for a in agents}) == 2  # restored copies never share a MAC

    host.app.monitor.run_once()  # no heartbeats from these guests: their live process counts
    assert all(
        host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=a.id)).agent.state
        == pb.AGENT_STATE_READY
        for a in agents
    )
    gone = host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agents[0].id)).agent
    assert gone.state == pb.AGENT_STATE_TERMINATED
    with IPRoute() as ip:
        assert ip.link_lookup(ifname=tap_name(agents[0].id)) == []
        assert ip.link_lookup(ifname=tap_name(agents[1].id)) != []
    assert _answer(agents[1].address).startswith("swarm guest")  # the other one is untouched
