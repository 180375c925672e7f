"""A hostile guest inside a qemu VM is root in its own kernel: namespaces,
/proc and cgroups there are the VM's, so what holds it is the VM boundary
and the bridge filter on its tap. Two VMs of two tenants run the runtime's
isolation self-check (swarmagent.selfcheck) as their work: each tries to
reach the other, ports on the host that are not for guests, the metadata
address; talks to vmhost from the other's address and from a MAC not its
own; and floods the host with ARP replies claiming the other's address.
Every attempt must fail (asserted one by one); the controls (vmhost's port
before and after) must work, and the host's neighbour table must still
hold each guest's own MAC.

TCG is slow: restoring two VMs and working a ticket in each takes a minute
or more on two shared cores. Skips only where qemu or the image is missing."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from swarm.ticketing.v1 import ticketing_pb2_grpc as tpb_grpc
from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_ticketing import server as ticketing_server
from swarm_vmhost import network
from swarm_vmhost.domain import DriverName
from tests.support.waiting import eventually
from tests.vmhost.harness import REPO, VmHostHarness, one_ticket_each
from tests.vmhost.test_hostile_guests import METADATA, PEER_PORT, _connects, _listener, _metadata_server
from tests.vmhost.test_qemu import _neighbour_mac

IMAGE = REPO / "build" / "guest"
TIMEOUT = 300.0  # TCG on two shared cores
TENANTS = ("tenant-a", "tenant-b")


def test_a_hostile_vm_gets_off_its_port_of_the_bridge_nowhere(
    make_vmhost: Callable[..., VmHostHarness],
    ticketing: tuple[ticketing_server.Ticketing, tpb_grpc.TicketingServiceStub],
    tmp_path: Path,
) -> None:
    app, tickets = ticketing
    # Stand-ins, on every address of the host, for PostgreSQL and the quota and
    # events services: not guest ports.
    stand_ins: list[tuple[socket.socket, int]] = [_listener("0.0.0.0") for _ in range(3)]
    # No guests readied ahead on this bridge: only the two VMs hold addresses.
    metadata, metadata_port = _metadata_server(make_vmhost(default_driver="process", warm_guests=0))
    stand_ins.append((metadata, metadata_port))
    closed_ports = ["5432", *(str(p) for _, p in stand_ins[:3])]
    host = make_vmhost(
        database_url=f"sqlite:///{tmp_path / 'vmhost.db'}",
        guest_image_dir=str(IMAGE),
        default_driver="qemu",
        ticketing_target=f"0.0.0.0:{app.port}",
        guest_work="swarmagent.selfcheck:work",
        guest_env=";".join(
            [
                f"SWARM_SELFCHECK_HOST_PORTS={','.join(closed_ports)}",
                f"SWARM_SELFCHECK_PEER_PORT={PEER_PORT}",
                f"SWARM_SELFCHECK_METADATA={METADATA}:{metadata_port}",
            ]
        ),
        heartbeat_interval_seconds=2,
        warm_guests=0,
    )
    qemu = host.app.host.drivers[DriverName.QEMU]
    if (why := qemu.probe()) is not None:
        pytest.skip(why)
    qemu.ensure_template()
    try:
        agents = [host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id=t)).agent for t in TENANTS]

        def state(a: pb.Agent) -> int:
            return host.stub.GetAgent(pb.GetAgentRequest(tenant_id=a.tenant_id, agent_id=a.id)).agent.state

        for agent in agents:
            eventually(
                lambda a=agent: state(a) == pb.AGENT_STATE_READY,
                timeout=TIMEOUT,
                interval=0.2,
                what=f"a heartbeat from inside VM {agent.id}",
            )
        # Both ready, then a ticket each: their checks run side by side.
        results = one_ticket_each(tickets, TENANTS, timeout=TIMEOUT, interval=0.5)
        reports = {a.id: results[a.tenant_id] for a in agents}
        # The peers' control: each VM's listener is up (the host reaches it), so
        # "no other guest reached" is the filter refusing, not nobody listening.
        for agent in agents:
            assert _connects(agent.address, PEER_PORT), agent.address
    finally:
        for server, _ in stand_ins:
            server.close()

    by_address = {a.address: a for a in agents}
    for agent in agents:
        report = reports[agent.id]
        assert report["address"] == agent.address
        assert report["reach_vmhost"]["ok"], report["reach_vmhost"]
        assert report["reach_vmhost_after"]["ok"], report["reach_vmhost_after"]
        assert not report["reach_other_guests"]["ok"], report["reach_other_guests"]
        for port in closed_ports:
            attempt = report[f"reach_host_port_{port}"]
            assert not attempt["ok"], (port, attempt)
        assert not report["reach_metadata"]["ok"], report["reach_metadata"]
        assert not report["spoof_peer_address"]["ok"], report["spoof_peer_address"]
        assert not report["spoof_mac"]["ok"], report["spoof_mac"]
        # The ARP replies left (the VM is root: nothing inside stops it) ...
        assert report["arp_claim_peer"]["ok"], report["arp_claim_peer"]
        # ... and the bridge dropped them: the host still has the victim at its own MAC.
        victim = by_address[str(report["spoofed_peer"])]
        assert _neighbour_mac(victim.address) == network.guest_mac(victim.id)
