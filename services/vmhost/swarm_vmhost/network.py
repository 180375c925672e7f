"""The guests' network, managed with pyroute2: one bridge (default `swarm0`)
holding the control plane's address, and per guest a network namespace
joined to the bridge by a veth pair.

Bridge ports are *isolated* (the kernel's `isolated on` bridge-port flag):
isolated ports can talk to the bridge itself (the host, where the control
plane listens) but not to each other, so no guest reaches another guest's
ports. That is not enough against a hostile guest (spoofing, routing
through the host, host listeners): swarm_vmhost.firewall filters the
bridge, and each guest's port is pinned to its MAC and address when it is
plugged and unpinned when it is detached. Device and namespace names derive
from the agent id with fixed prefixes, so leftovers of a crash can be found
and removed.

Devices in the host namespace (bridge, veth pairs, port flags) are managed
with pyroute2. Steps inside a guest's namespace run iproute2 (`ip netns add`,
`ip -n <ns> ...`): pyroute2's namespace helpers fork a Python child, which is
not safe in a multi-threaded gRPC server (the child can inherit a lock held
by another thread), while exec'ing a binary is.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from swarm_vmhost import firewall

log = logging.getLogger(__name__)

HOST_PREFIX = "swh"
GUEST_IFNAME = "eth0"


def short_id(agent_id: str) -> str:
    return agent_id.replace("-", "")[:10]


def netns_name(bridge: Bridge, agent_id: str) -> str:
    """Namespaces carry their bridge's name, so one host's vmhosts (or test
    runs) never take each other's for leftovers."""
    return f"{bridge.name}-{short_id(agent_id)}"


def host_veth(agent_id: str) -> str:
    return f"{HOST_PREFIX}{short_id(agent_id)}"  # 13 characters, under IFNAMSIZ


def guest_mac(agent_id: str) -> str:
    """The guest's MAC, derived from its id so the host knows it before the
    guest exists (swarm_vmhost.firewall pins it): locally administered, unicast."""
    digest = hashlib.sha256(agent_id.encode()).digest()
    return ":".join(f"{b:02x}" for b in (digest[0] & 0xFC | 0x02, *digest[1:6]))


@dataclass(frozen=True)
class Bridge:
    name: str
    network: ipaddress.IPv4Network

    @property
    def address(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def prefix_len(self) -> int:
        return self.network.prefixlen

    def guest_addresses(self) -> list[str]:
        """Addresses guests may get (the bridge keeps the first)."""
        return [str(h) for h in self.network.hosts()][1:]


def probe() -> str | None:
    """None when this process may manage the host's network (bridges, veth
    pairs, namespaces), else why not."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create namespaces and devices"
    try:
        with IPRoute() as ip:
            ip.get_links()
    except (OSError, NetlinkError) as exc:
        return f"netlink unavailable: {exc}"
    return None


def bridge_mac(bridge: Bridge) -> str:
    """The bridge's own MAC, fixed: a bridge without one takes its lowest
    port's and changes it when that port leaves, cutting every other guest
    off from the host until their ARP entries expire."""
    return guest_mac(f"bridge:{bridge.name}")


def ensure_bridge(bridge: Bridge) -> None:
    """Create the bridge with its address and MAC, or accept it as it is. Idempotent."""
    with IPRoute() as ip:
        found = ip.link_lookup(ifname=bridge.name)
        if not found:
            ip.link("add", ifname=bridge.name, kind="bridge")
            found = ip.link_lookup(ifname=bridge.name)
        index = found[0]
        if ip.get_links(index)[0].get_attr("IFLA_ADDRESS") != bridge_mac(bridge):
            ip.link("set", index=index, address=bridge_mac(bridge))
        addresses = {a.get_attr("IFA_ADDRESS") for a in ip.get_addr(index=index, family=2)}
        if bridge.address not in addresses:
            ip.addr("add", index=index, address=bridge.address, prefixlen=bridge.prefix_len)
        ip.link("set", index=index, state="up")


def remove_bridge(bridge: Bridge) -> None:
    """The bridge and its filter (swarm_vmhost.firewall) go together."""
    with IPRoute() as ip:
        found = ip.link_lookup(ifname=bridge.name)
        if found:
            ip.link("del", index=found[0])
    firewall.remove(bridge)


def attach(agent_id: str, bridge: Bridge, address: str) -> tuple[str, str]:
    """A namespace for the guest with `eth0` at `address` on the bridge and
    its default route through the bridge. Returns (namespace, host device)."""
    ns = netns_name(bridge, agent_id)
    try:
        _ip("netns", "add", ns)
        plug(agent_id, bridge, address)
    except Exception:
        detach(bridge, agent_id)
        raise
    return ns, host_veth(agent_id)


def adopt(agent_id: str, bridge: Bridge, address: str, pid: int) -> str:
    """Like `attach`, for a guest already running in a network namespace of
    its own (a warm sandbox, process `pid`): the namespace takes the agent's
    name and is plugged into the bridge. Returns the namespace's name."""
    ns = netns_name(bridge, agent_id)
    try:
        _ip("netns", "attach", ns, str(pid))
        plug(agent_id, bridge, address)
    except Exception:
        detach(bridge, agent_id)
        raise
    return ns


def plug(agent_id: str, bridge: Bridge, address: str) -> None:
    """The veth pair between the guest's namespace and the bridge, configured.
    Replaces a pair that is there already (how a cut-off guest is repaired).
    The port is pinned to the guest's MAC and address before it exists, so
    no frame of the guest's ever passes unfiltered."""
    ns, veth, mac = netns_name(bridge, agent_id), host_veth(agent_id), guest_mac(agent_id)
    try:
        firewall.pin(bridge, agent_id, mac, address, veth)
    except firewall.FirewallError as exc:
        raise NetworkError(str(exc)) from exc
    with IPRoute() as ip:
        for index in ip.link_lookup(ifname=veth):
            ip.link("del", index=index)
        bridge_index = ip.link_lookup(ifname=bridge.name)[0]
        peer = {"ifname": GUEST_IFNAME, "net_ns_fd": ns, "address": mac}
        ip.link("add", ifname=veth, kind="veth", peer=peer)
        index = ip.link_lookup(ifname=veth)[0]
        ip.link("set", index=index, master=bridge_index, state="up")
        ip.brport("set", index=index, isolated=1)
    # Inside the namespace, in one iproute2 run (a spawn's latency is mostly
    # process starts). `route replace`: a repair may find a route left.
    _ip_batch(
        ns,
        [
            "link set lo up",
            f"addr add {address}/{bridge.prefix_len} dev {GUEST_IFNAME}",
            f"link set {GUEST_IFNAME} up",
            f"route replace default via {bridge.address}",
        ],
    )


class NetworkError(Exception):
    """An iproute2 step failed; the message is its own."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _ip_batch(ns: str, commands: list[str]) -> None:
    """Several `ip` commands inside namespace `ns`, run by one iproute2 process."""
    done = subprocess.run(
        ["ip", "-n", ns, "-batch", "-"],
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise NetworkError(f"ip -n {ns} -batch: {done.stderr.strip()}")


def detach(bridge: Bridge, agent_id: str) -> None:
    """Remove the guest's veth pair and namespace, then its pin. Idempotent."""
    with IPRoute() as ip:
        found = ip.link_lookup(ifname=host_veth(agent_id))
        if found:
            try:
                ip.link("del", index=found[0])  # takes the guest end with it
            except NetlinkError as exc:
                log.warning("veth removal failed", extra={"agent_id": agent_id, "error": str(exc)})
    if netns_name(bridge, agent_id) in netns.listnetns():
        _ip("netns", "del", netns_name(bridge, agent_id))
    try:
        firewall.unpin(bridge, agent_id)
    except firewall.FirewallError as exc:
        raise NetworkError(str(exc)) from exc


def link_up(agent_id: str) -> bool:
    """Whether the guest's host-side device exists, is up and is on a bridge."""
    with IPRoute() as ip:
        found = ip.link_lookup(ifname=host_veth(agent_id))
        if not found:
            return False
        link = ip.get_links(found[0])[0]
        return bool(link.get_attr("IFLA_MASTER")) and link.get_attr("IFLA_OPERSTATE") in ("UP", "UNKNOWN")


def reach(bridge: Bridge, agent_id: str, host: str, port: int, timeout: float = 1.0) -> bool:
    """Can the guest open a TCP connection to host:port? (Run from inside its namespace.)"""
    code = (
        "import socket,sys\n"
        f"s=socket.socket(); s.settimeout({timeout})\n"
        f"sys.exit(0 if s.connect_ex(({host!r},{port}))==0 else 1)\n"
    )
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", netns_name(bridge, agent_id), sys.executable, "-c", code],
            capture_output=True,
            timeout=timeout + 5,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def leftovers(bridge: Bridge) -> set[str]:
    """Short ids of this bridge's guest namespaces and host devices."""
    prefix = f"{bridge.name}-"
    found = {n.removeprefix(prefix) for n in netns.listnetns() if n.startswith(prefix)}
    with IPRoute() as ip:
        bridge_index = next(iter(ip.link_lookup(ifname=bridge.name)), None)
        for link in ip.get_links():
            name = str(link.get_attr("IFLA_IFNAME") or "")
            if name.startswith(HOST_PREFIX) and bridge_index and link.get_attr("IFLA_MASTER") == bridge_index:
                found.add(name.removeprefix(HOST_PREFIX))
    return found


def remove_by_short_id(bridge: Bridge, short: str) -> None:
    with IPRoute() as ip:
        found = ip.link_lookup(ifname=f"{HOST_PREFIX}{short}")
        if found:
            ip.link("del", index=found[0])
    if f"{bridge.name}-{short}" in netns.listnetns():
        _ip("netns", "del", f"{bridge.name}-{short}")


# -- bridges of their own, beside other vmhosts -----------------------------------------------


def networks_in_use() -> Iterator[ipaddress.IPv4Network]:
    """Every IPv4 network the host's addresses and routes cover (the default
    route aside, which covers everything)."""
    with IPRoute() as ip:
        for a in ip.get_addr(family=socket.AF_INET):
            yield ipaddress.IPv4Network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False)
        for r in ip.get_routes(family=socket.AF_INET):  # every table
            dst = r.get_attr("RTA_DST")
            if dst and r["dst_len"]:
                yield ipaddress.IPv4Network(f"{dst}/{r['dst_len']}", strict=False)


def free_subnet(pool: ipaddress.IPv4Network, prefixlen: int = 24) -> ipaddress.IPv4Network | None:
    """The first subnet of `pool` that no address or route on this host overlaps."""
    used = list(networks_in_use())
    return next((n for n in pool.subnets(new_prefix=prefixlen) if not any(n.overlaps(u) for u in used)), None)


def claim_bridge(pool: ipaddress.IPv4Network, name_prefix: str, lock_path: Path) -> Bridge:
    """A new bridge, created here, on a subnet of `pool` nothing else uses.

    Choosing and creating happen under an exclusive lock on `lock_path`, and
    the bridge holds its address before the lock is released: whoever
    chooses next sees that subnet taken, so concurrent claimers (test runs,
    benchmarks) never share a subnet or a name."""
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subnet = free_subnet(pool)
        if subnet is None:
            raise NetworkError(f"no free /24 left in {pool}: every one overlaps an address or route here")
        with IPRoute() as ip:
            name = next(
                n
                for n in (f"{name_prefix}{uuid.uuid4().hex[:8]}" for _ in range(100))
                if not ip.link_lookup(ifname=n)
            )
        bridge = Bridge(name[:15], subnet)
        ensure_bridge(bridge)
        return bridge
