"""gVisor's default path attacked from inside: guests restored from the
snapshot before any spawn asked for them run the hostile program
(hostile.py) as their work, a single-threaded child of the agent runtime.
Every attempt fails (test_hostile_guests.assert_refused), in two guests of
two tenants side by side."""

from __future__ import annotations

import socket
from collections.abc import Callable

from swarm.ticketing.v1 import ticketing_pb2_grpc as tpb_grpc
from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_ticketing import server as ticketing_server
from swarm_vmhost.domain import DriverName
from swarm_vmhost.drivers.gvisor import GvisorDriver
from tests.support.waiting import eventually
from tests.vmhost.harness import VmHostHarness, one_ticket_each
from tests.vmhost.test_hostile_guests import (
    PEER_PORT,
    _connects,
    _listener,
    _metadata_server,
    assert_refused,
    host_secret,  # noqa: F401 - the fixture
    hostile_env,
)

TENANTS = ("tenant-a", "tenant-b")


def test_a_hostile_guest_restored_ahead_gets_out_nowhere(
    make_vmhost: Callable[..., VmHostHarness],
    ticketing: tuple[ticketing_server.Ticketing, tpb_grpc.TicketingServiceStub],
    db: str,
    host_secret: str,  # noqa: F811 - the fixture
) -> None:
    app, tickets = ticketing
    stand_ins: list[tuple[socket.socket, int]] = [_listener("0.0.0.0") for _ in range(3)]
    closed_ports = [str(p) for _, p in stand_ins]
    metadata, metadata_port = _metadata_server(make_vmhost(default_driver="process", warm_guests=0))
    stand_ins.append((metadata, metadata_port))
    host = make_vmhost(
        default_driver="gvisor",
        warm_guests=2,
        ticketing_target=f"0.0.0.0:{app.port}",
        guest_work="tests.vmhost.work:hostile",
        guest_env=hostile_env(db.removeprefix("sqlite:///"), closed_ports, metadata_port, host_secret),
        start_timeout_seconds=120,
    )
    driver = host.app.host.drivers[DriverName.GVISOR]
    assert isinstance(driver, GvisorDriver) and driver.wait_warm(300) and driver.ahead is not None
    ahead = driver.ahead
    eventually(lambda: len(ahead.ready_ids()) == 2, timeout=120, what="two guests restored ahead")
    try:
        agents = [host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id=t)).agent for t in TENANTS]
        for agent in agents:
            handle = host.app.host.agents.get_any(agent.id).handle
            assert handle is not None and handle.data["restored_ahead"] == "1"
        results = one_ticket_each(tickets, TENANTS, timeout=120)
    finally:
        for server, _ in stand_ins:
            server.close()
    for agent in agents:
        assert _connects(agent.address, PEER_PORT), agent.address  # the peers' control
        assert_refused(results[agent.tenant_id]["report"], closed_ports)
