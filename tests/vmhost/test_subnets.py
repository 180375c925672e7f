"""Test bridges never collide: each takes a subnet no address or route on
the host covers and a name no link has, chosen and created under a lock
file every test process shares."""

from __future__ import annotations

import ipaddress
import multiprocessing
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest
from pyroute2 import IPRoute

from swarm_vmhost import network
from swarm_vmhost.network import Bridge, NetworkError
from tests.vmhost.harness import fresh_bridge

# Ranges of their own, outside the one other tests take bridges from.
SMALL_POOL = ipaddress.IPv4Network("10.215.0.0/22")  # four /24s
CONCURRENT_POOL = ipaddress.IPv4Network("10.215.8.0/21")  # eight /24s


@pytest.fixture
def occupier() -> Iterator[int]:
    """A link of the test's own to hang addresses and routes on, removed after."""
    name = f"swo{uuid.uuid4().hex[:8]}"
    with IPRoute() as ip:
        ip.link("add", ifname=name, kind="bridge")
        index = ip.link_lookup(ifname=name)[0]
        ip.link("set", index=index, state="up")
    try:
        yield index
    finally:
        with IPRoute() as ip:
            ip.link("del", index=index)


def test_a_fresh_bridge_takes_a_subnet_no_address_or_route_covers(occupier: int) -> None:
    with IPRoute() as ip:
        ip.addr("add", index=occupier, address="10.215.0.7", prefixlen=24)  # an address's subnet
        ip.route("add", dst="10.215.1.0/24", oif=occupier)  # a route
        ip.addr("add", index=occupier, address="10.215.3.9", prefixlen=24)
    bridge = fresh_bridge(SMALL_POOL)
    try:
        assert bridge.network == ipaddress.IPv4Network("10.215.2.0/24")
        with IPRoute() as ip:
            assert ip.link_lookup(ifname=bridge.name)  # created before the lock was let go
        with pytest.raises(NetworkError, match="no free /24 left in 10.215.0.0/22"):
            fresh_bridge(SMALL_POOL)  # the bridge's own subnet is now taken too
    finally:
        network.remove_bridge(bridge)


def _claim(pool: str) -> tuple[str, str]:
    bridge = fresh_bridge(ipaddress.IPv4Network(pool))
    return bridge.name, str(bridge.network)


def test_concurrent_claims_never_share_a_subnet_or_a_name() -> None:
    # Separate processes, like concurrent test runs.
    with ProcessPoolExecutor(6, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_claim, str(CONCURRENT_POOL)) for _ in range(6)]
    claimed = [f.result() for f in futures if f.exception() is None]
    try:
        assert [f.exception() for f in futures] == [None] * 6
        assert len({name for name, _ in claimed}) == 6
        assert len({subnet for _, subnet in claimed}) == 6
        assert all(ipaddress.IPv4Network(subnet).subnet_of(CONCURRENT_POOL) for _, subnet in claimed)
    finally:
        for name, subnet in claimed:
            network.remove_bridge(Bridge(name, ipaddress.IPv4Network(subnet)))


def test_a_bridge_keeps_its_own_mac_whatever_ports_come_and_go() -> None:
    """A bridge with no MAC of its own takes its lowest port's and changes it
    when that port leaves (every guest's ARP entry for the host goes stale)."""
    bridge = fresh_bridge()
    try:
        network.ensure_bridge(bridge)
        with IPRoute() as ip:
            index = ip.link_lookup(ifname=bridge.name)[0]

            def mac() -> str:
                return str(ip.get_links(index)[0].get_attr("IFLA_ADDRESS"))

            assert mac() == network.bridge_mac(bridge)
            ip.link(
                "add", ifname=f"{bridge.name[:11]}lo", kind="veth", peer={"ifname": f"{bridge.name[:11]}lp"}
            )
            port = ip.link_lookup(ifname=f"{bridge.name[:11]}lo")[0]
            ip.link("set", index=port, address="02:00:00:00:00:01", master=index, state="up")
            assert mac() == network.bridge_mac(bridge)  # not the lower port's
            ip.link("del", index=port)
            assert mac() == network.bridge_mac(bridge)
    finally:
        network.remove_bridge(bridge)
