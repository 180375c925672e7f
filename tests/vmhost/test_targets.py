"""Where a guest is told to find the control plane."""

from __future__ import annotations

import ipaddress

from swarm_vmhost.guests import guest_target
from swarm_vmhost.network import Bridge

BRIDGE = Bridge("swarm0", ipaddress.IPv4Network("10.88.0.0/24"))


def test_host_local_services_are_reached_through_the_bridge_by_namespaced_guests() -> None:
    assert guest_target("127.0.0.1:50051", BRIDGE, isolated=True) == "10.88.0.1:50051"
    assert guest_target("0.0.0.0:7000", BRIDGE, isolated=True) == "10.88.0.1:7000"
    assert guest_target("localhost:1", BRIDGE, isolated=True) == "10.88.0.1:1"
    # Another host is reached as given; an unisolated guest shares the host's view.
    assert guest_target("ticketing.swarm.svc:50051", BRIDGE, isolated=True) == "ticketing.swarm.svc:50051"
    assert guest_target("127.0.0.1:50051", BRIDGE, isolated=False) == "127.0.0.1:50051"
    assert guest_target("", BRIDGE, isolated=True) == ""
