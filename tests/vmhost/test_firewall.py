"""The bridge filter (swarm_vmhost.firewall) against a hostile guest, on a
real bridge with real namespaces: each attack is first shown to work on the
bridge as it is without the filter, then refused with it, beside a control
that shows the guest's legitimate traffic still passes."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

from swarm_vmhost import firewall, network
from swarm_vmhost import server as vmhost_server
from swarm_vmhost.config import Settings
from tests.support.waiting import eventually
from tests.vmhost.harness import fresh_bridge

# ip_forward is host-wide: tests that need it hold this lock (every test
# process on the host shares it) and put the old value back.
FORWARD_LOCK = Path(tempfile.gettempdir()) / "swarm-vmhost-test-ip-forward.lock"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")

SEND_FRAME = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n"
    "s.bind(('eth0',0))\n"
    "s.send(bytes.fromhex(sys.argv[1]))\n"
)
CONNECT = (
    "import socket,sys\n"
    "socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=float(sys.argv[3])).close()\n"
)
SERVE = (
    "import socket,sys\n"
    "s=socket.create_server(('0.0.0.0',int(sys.argv[1])))\n"
    "print('up',flush=True)\n"
    "while True: s.accept()[0].close()\n"
)
GUEST_PORT = 7100
REFUSED_TIMEOUT = 1.0  # a dropped SYN is never answered: how long a refusal takes to show


@dataclass
class Guest:
    agent_id: str
    ns: str
    address: str
    mac: str
    port: str


@dataclass
class Lab:
    """A fresh bridge and what the test hangs on it; `close` undoes it all."""

    bridge: network.Bridge
    guests: list[Guest] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)
    ip_rules: list[list[str]] = field(default_factory=list)

    def guest(self, n: int) -> Guest:
        agent_id = str(uuid.uuid4())
        address = str(self.bridge.network.network_address + n)
        ns, port = network.attach(agent_id, self.bridge, address)
        g = Guest(agent_id, ns, address, network.guest_mac(agent_id), port)
        self.guests.append(g)
        return g

    def run(self, ns: str, code: str, *args: str, timeout: float = 10) -> bool:
        done = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return done.returncode == 0

    def connects(self, ns: str, host: str, port: int) -> bool:
        return self.run(ns, CONNECT, host, str(port), str(REFUSED_TIMEOUT))

    def send(self, g: Guest, frame: bytes) -> None:
        assert self.run(g.ns, SEND_FRAME, frame.hex())

    def serve(self, ns: str, port: int = GUEST_PORT) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", SERVE, str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.processes.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"

    def listen(self, address: str, family: socket.AddressFamily = socket.AF_INET) -> int:
        """A TCP listener on the host, accepting and closing; its port."""
        server = socket.create_server((address, 0), family=family, dualstack_ipv6=family == socket.AF_INET6)
        self.sockets.append(server)

        def accept() -> None:
            while True:
                try:
                    server.accept()[0].close()
                except OSError:
                    return

        threading.Thread(target=accept, daemon=True).start()
        return int(server.getsockname()[1])

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    def netns(self, ns: str, *args: str) -> None:
        self.ip("netns", "exec", ns, *args)

    def close(self) -> None:
        for proc in self.processes:
            proc.kill()
            proc.wait()
        for s in self.sockets:
            s.close()
        for rule in self.ip_rules:
            subprocess.run(["ip", "rule", "del", *rule], capture_output=True, check=False)
        for g in self.guests:
            network.detach(self.bridge, g.agent_id)
        for ns in self.namespaces:
            if ns in netns.listnetns():
                netns.remove(ns)
        network.remove_bridge(self.bridge)  # its tables go with it


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab(fresh_bridge())
    try:
        yield lab
    finally:
        lab.close()
    assert not tables(lab.bridge)


def tables(bridge: network.Bridge) -> list[str]:
    listed = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True, check=True)
    names = [i["table"] for i in json.loads(listed.stdout)["nftables"] if "table" in i]
    return [f"{t['family']} {t['name']}" for t in names if t["name"] == firewall.table(bridge.name)]


def policy(*host_ports: int, egress: str = "") -> firewall.Policy:
    return firewall.Policy(frozenset(host_ports), firewall.parse_egress(egress))


@contextmanager
def forwarding() -> Iterator[None]:
    """ip_forward=1 for the block, then its old value."""
    with open(FORWARD_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = IP_FORWARD.read_text()
        IP_FORWARD.write_text("1\n")
        try:
            yield
        finally:
            IP_FORWARD.write_text(old)


def host_connects(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(REFUSED_TIMEOUT)
        return s.connect_ex((address, port)) == 0


# -- frames ---------------------------------------------------------------------------------------


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def bridge_mac(bridge: network.Bridge) -> str:
    return Path(f"/sys/class/net/{bridge.name}/address").read_text().strip()


def arp_request(sender_mac: str, sender_ip: str, target_ip: str) -> bytes:
    """ "Who has target_ip? Tell sender_ip (at sender_mac)", broadcast."""
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac_bytes(sender_mac) + socket.inet_aton(sender_ip)
    body += b"\x00" * 6 + socket.inet_aton(target_ip)
    return b"\xff" * 6 + mac_bytes(sender_mac) + b"\x08\x06" + body


def checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        1,
        0,
        64,
        17,
        0,
        socket.inet_aton(src_ip),
        socket.inet_aton(dst_ip),
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + b"\x08\x00" + header + udp


class Sniffer:
    """Frames that got through the bridge to the host: a packet socket on
    the bridge device sees them after the bridge's prerouting hook."""

    def __init__(self, bridge: network.Bridge) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((bridge.name, 0))
        self.sock.settimeout(0.1)
        self.frames: list[bytes] = []  # every frame read so far

    def seen(self, marker: bytes, timeout: float = 3.0) -> bool:
        deadline = time.monotonic() + timeout
        while not any(marker in f for f in self.frames):
            if time.monotonic() >= deadline:
                return False
            try:
                self.frames.append(self.sock.recv(65536))
            except TimeoutError:
                continue
        return True

    def close(self) -> None:
        self.sock.close()


def neighbour_mac(bridge: network.Bridge, address: str) -> str | None:
    shown = subprocess.run(
        ["ip", "-j", "neigh", "show", "to", address, "dev", bridge.name],
        capture_output=True,
        text=True,
        check=True,
    )
    entries = json.loads(shown.stdout or "[]")
    return str(entries[0]["lladdr"]) if entries and "lladdr" in entries[0] else None


# -- spoofing -------------------------------------------------------------------------------------


def test_a_guest_cannot_arp_spoof_another_guests_address(lab: Lab) -> None:
    a, b = lab.guest(2), lab.guest(3)
    host = lab.bridge.address

    def host_learns(g: Guest, sender_mac: str, sender_ip: str) -> str | None:
        lab.send(g, arp_request(sender_mac, sender_ip, host))
        return eventually(
            lambda: neighbour_mac(lab.bridge, sender_ip) == sender_mac and sender_mac, timeout=3
        )

    # Without the filter: A says "B's address is at my MAC" and the host believes it.
    assert host_learns(b, b.mac, b.address)
    assert host_learns(a, a.mac, b.address) == a.mac

    firewall.install(lab.bridge, policy())
    assert host_learns(b, b.mac, b.address)
    lab.send(a, arp_request(a.mac, b.address, host))  # the spoof
    subprocess.run(
        ["ip", "neigh", "del", a.address, "dev", lab.bridge.name], capture_output=True, check=False
    )
    assert host_learns(a, a.mac, a.address)  # A's own ARP, sent after the spoof, still gets through
    assert neighbour_mac(lab.bridge, b.address) == b.mac


@pytest.mark.parametrize("spoofed", ["ip", "mac"])
def test_a_guest_cannot_send_with_another_address_or_mac(lab: Lab, spoofed: str) -> None:
    a, b = lab.guest(2), lab.guest(3)
    host, host_mac = lab.bridge.address, bridge_mac(lab.bridge)
    src_mac, src_ip = (a.mac, b.address) if spoofed == "ip" else (b.mac, a.address)
    sniffer = Sniffer(lab.bridge)
    try:
        before = uuid.uuid4().bytes
        lab.send(a, udp_frame(src_mac, host_mac, src_ip, host, before))
        assert sniffer.seen(before)  # the bridge passes it on as it is

        firewall.install(lab.bridge, policy())
        spoofed_marker, own_marker = uuid.uuid4().bytes, uuid.uuid4().bytes
        lab.send(a, udp_frame(src_mac, host_mac, src_ip, host, spoofed_marker))
        lab.send(a, udp_frame(a.mac, host_mac, a.address, host, own_marker))
        assert sniffer.seen(own_marker)  # sent after the spoofed one: that one had its chance
        assert not sniffer.seen(spoofed_marker, timeout=0)
    finally:
        sniffer.close()


# -- guest to guest -------------------------------------------------------------------------------


def test_guests_cannot_reach_each_other_directly_even_on_unisolated_ports(lab: Lab) -> None:
    a, b = lab.guest(2), lab.guest(3)
    lab.serve(b.ns)
    with IPRoute() as ip:  # take the ports' isolation away: the filter alone must hold
        for g in (a, b):
            ip.brport("set", index=ip.link_lookup(ifname=g.port)[0], isolated=0)
    assert lab.connects(a.ns, b.address, GUEST_PORT)

    firewall.install(lab.bridge, policy())
    subprocess.run(["ip", "-n", a.ns, "neigh", "flush", "all"], check=True)
    assert not lab.connects(a.ns, b.address, GUEST_PORT)
    assert host_connects(b.address, GUEST_PORT)  # the host still reaches the guest


def test_guests_cannot_reach_each_other_through_the_host(lab: Lab) -> None:
    a, b = lab.guest(2), lab.guest(3)
    lab.serve(b.ns)
    for g, other in ((a, b), (b, a)):  # each sends the other's traffic to the host to route
        lab.ip("-n", g.ns, "route", "add", f"{other.address}/32", "via", lab.bridge.address)
        lab.netns(g.ns, "sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0")
    with forwarding():
        assert lab.connects(a.ns, b.address, GUEST_PORT)  # routed swarm0 → swarm0

        # Even where the operator's allow-list covers the guests' own subnet.
        firewall.install(lab.bridge, policy(egress=f"{lab.bridge.network}:{GUEST_PORT}"))
        assert not lab.connects(a.ns, b.address, GUEST_PORT)
        assert host_connects(b.address, GUEST_PORT)  # the host still reaches the guest


# -- guest to host --------------------------------------------------------------------------------


def bridge_link_local(bridge: network.Bridge) -> str:
    def found() -> str | None:
        shown = subprocess.run(
            ["ip", "-j", "-6", "addr", "show", "dev", bridge.name, "scope", "link"],
            capture_output=True,
            text=True,
            check=True,
        )
        for link in json.loads(shown.stdout or "[]"):
            for a in link.get("addr_info", []):
                if not a.get("tentative"):
                    return str(a["local"])
        return None

    return eventually(found, timeout=10, what=f"a link-local address on {bridge.name}")


def test_a_guest_reaches_only_the_allowed_ports_on_the_host(lab: Lab) -> None:
    g = lab.guest(2)
    host = lab.bridge.address
    allowed = lab.listen(host)
    other = lab.listen(host)
    database = lab.listen("::", socket.AF_INET6)  # like PostgreSQL on listen_addresses='*'
    link_local = f"{bridge_link_local(lab.bridge)}%eth0"
    for port in (allowed, other, database):
        assert lab.connects(g.ns, host, port)
    assert eventually(lambda: lab.connects(g.ns, link_local, database), timeout=10)  # and over IPv6

    firewall.install(lab.bridge, policy(allowed))
    assert lab.connects(g.ns, host, allowed)
    assert not lab.connects(g.ns, host, other)
    assert not lab.connects(g.ns, host, database)
    assert not lab.connects(g.ns, link_local, database)

    firewall.install(lab.bridge, policy(allowed, other))  # installing again replaces the ports
    assert lab.connects(g.ns, host, other)
    assert not lab.connects(g.ns, host, database)


# -- beyond the host ------------------------------------------------------------------------------

OUTSIDE = "192.0.2.10"  # TEST-NET-1, on the test's own "outside" namespace


@pytest.mark.parametrize("metadata", ["169.254.169.254", "100.100.100.200"])
def test_metadata_addresses_are_unreachable_even_when_allow_listed(lab: Lab, metadata: str) -> None:
    """An "outside" namespace holding a metadata address and OUTSIDE, routed
    through the host for this bridge's subnet only (a rule and a table of
    this test's own: the host's own route to a metadata server is untouched)."""
    g = lab.guest(2)
    outside, veth = f"{lab.bridge.name}-out", f"{lab.bridge.name}o"
    number = str(20000 + int(lab.bridge.network.network_address.packed[2]))  # a subnet per bridge
    lab.ip("netns", "add", outside)
    lab.namespaces.append(outside)
    with IPRoute() as ip:
        ip.link("add", ifname=veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": outside})
        ip.link("set", index=ip.link_lookup(ifname=veth)[0], state="up")
    for address in (metadata, OUTSIDE):
        lab.ip("-n", outside, "addr", "add", f"{address}/32", "dev", "eth0")
    lab.ip("-n", outside, "link", "set", "eth0", "up")
    lab.ip("-n", outside, "route", "add", "default", "via", lab.bridge.address, "dev", "eth0", "onlink")
    for address in (metadata, OUTSIDE):
        lab.ip("route", "add", f"{address}/32", "dev", veth, "table", number)
    rule = ["from", str(lab.bridge.network), "lookup", number, "pref", number]
    lab.ip("rule", "add", *rule)
    lab.ip_rules.append(rule)
    lab.serve(outside, 80)
    lab.serve(outside, 81)

    with forwarding():
        assert lab.connects(g.ns, metadata, 80)  # without the filter: the metadata server answers
        assert lab.connects(g.ns, OUTSIDE, 81)

        firewall.install(lab.bridge, policy(egress=f"{metadata}/32:80,{OUTSIDE}/32:80"))
        assert lab.connects(g.ns, OUTSIDE, 80)  # allow-listed
        assert not lab.connects(g.ns, OUTSIDE, 81)  # not
        assert not lab.connects(g.ns, metadata, 80)  # allow-listed, and still not


# -- pins' life -----------------------------------------------------------------------------------


def chain_exists(bridge: network.Bridge, agent_id: str) -> bool:
    done = subprocess.run(
        ["nft", "list", "chain", "bridge", firewall.table(bridge.name), f"guest_{agent_id}"],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_pins_go_with_their_guest_stale_ones_are_reconciled_and_remove_takes_everything(lab: Lab) -> None:
    a, b = lab.guest(2), lab.guest(3)
    firewall.install(lab.bridge, policy(1234))
    firewall.install(lab.bridge, policy(1234))  # idempotent
    assert firewall.pins(lab.bridge) == {a.agent_id: [a.port], b.agent_id: [b.port]}
    assert sorted(tables(lab.bridge)) == [
        f"bridge vmhost_{lab.bridge.name}",
        f"inet vmhost_{lab.bridge.name}",
    ]

    network.detach(lab.bridge, a.agent_id)
    assert firewall.pins(lab.bridge) == {b.agent_id: [b.port]}
    assert not chain_exists(lab.bridge, a.agent_id) and chain_exists(lab.bridge, b.agent_id)
    assert not firewall.unpin(lab.bridge, a.agent_id)  # idempotent

    # A vmhost died with guests pinned: on restart, pins nobody owns go.
    c = lab.guest(4)
    assert firewall.reconcile(lab.bridge, {b.agent_id}) == [c.agent_id]
    assert firewall.pins(lab.bridge) == {b.agent_id: [b.port]}
    assert firewall.reconcile(lab.bridge, {b.agent_id}) == []

    # A guest's new port (a repaired link) is pinned again, the same way.
    network.plug(b.agent_id, lab.bridge, b.address)
    assert firewall.pins(lab.bridge) == {b.agent_id: [b.port]}

    firewall.remove(lab.bridge)
    assert tables(lab.bridge) == []
    firewall.remove(lab.bridge)  # idempotent
    network.detach(lab.bridge, b.agent_id)  # unpinning after removal brings nothing back
    assert tables(lab.bridge) == []


def test_the_filter_refuses_what_it_cannot_write_safely() -> None:
    bridge = network.Bridge('bad"name', ipaddress.IPv4Network("192.0.2.0/24"))
    with pytest.raises(firewall.FirewallError, match="bridge name"):
        firewall.install(bridge, policy())
    good = network.Bridge("swtnone", ipaddress.IPv4Network("192.0.2.0/24"))
    with pytest.raises(firewall.FirewallError, match="agent id"):
        firewall.pin(good, "a b; flush ruleset", "02:00:00:00:00:01", "192.0.2.2", "swhx")
    with pytest.raises(firewall.FirewallError, match="MAC"):
        firewall.pin(good, "a", "02:00:00:00:00:01 accept", "192.0.2.2", "swhx")
    assert firewall.pins(good) == {}
    assert firewall.probe() is None


# -- settings and wiring --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        pytest.param("guest_egress_allow", "10.1.2.3/32", "CIDR:PORT", id="no-port"),
        pytest.param("guest_egress_allow", "10.1.2.3/32:99999", "not a port", id="bad-port"),
        pytest.param("guest_egress_allow", "10.1.2.3/32:443/icmp", "CIDR:PORT", id="bad-protocol"),
        pytest.param("guest_egress_allow", "10.1.2.3/8:443", "host bits", id="host-bits"),
        pytest.param("guest_egress_allow", "[2001:db8::]/32:443", "IPv4", id="ipv6"),
        pytest.param("guest_host_ports_extra", "7000,http", "not a port", id="bad-extra-port"),
    ],
)
def test_bad_filter_settings_are_refused_with_the_entry_named(setting: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**{setting: value})


def test_guests_are_allowed_the_ports_they_are_told_to_call() -> None:
    bridge = network.Bridge("swarm0", ipaddress.IPv4Network("10.88.0.0/24"))
    settings = Settings(
        ticketing_agent_target="0.0.0.0:7443",
        telemetry_agent_target="127.0.0.1:7444",
        ticketing_target="127.0.0.1:50051",  # a mesh port: not for guests with tokens
        llm_proxy_url="https://{host}:8443/",
        guest_host_ports_extra="9000",
        guest_egress_allow="10.1.2.3/32:443, 192.0.2.0/24:53/udp",
    )
    with_tokens = vmhost_server.guest_policy(settings, bridge, "10.88.0.1:7445", with_tokens=True)
    assert with_tokens.host_ports == {7443, 7444, 7445, 8443, 9000}
    assert [str(e) for e in with_tokens.egress] == ["10.1.2.3/32:443/tcp", "192.0.2.0/24:53/udp"]
    # Insecure dev mode: guests without tokens call the mesh port where no agent port is set.
    dev = Settings(ticketing_target="127.0.0.1:50051", telemetry_target="10.9.9.9:4317")
    assert vmhost_server.guest_policy(dev, bridge, "0.0.0.0:50055", with_tokens=False).host_ports == {
        50051,
        50055,
    }  # telemetry on another host is egress, not a host port


def test_vmhost_filters_its_bridge_from_start_to_shutdown(db: str, tmp_path: Path) -> None:
    from tests.vmhost.harness import start_vmhost

    bridge = fresh_bridge()
    try:
        host = start_vmhost(db, tmp_path, bridge, default_driver="netns", guest_host_ports_extra="7000")
        own_port = int(host.app.host.own_target.rpartition(":")[2])
        listed = subprocess.run(
            ["nft", "-j", "list", "set", "inet", firewall.table(bridge.name), "host_ports"],
            capture_output=True,
            text=True,
            check=True,
        )
        ports = json.loads(listed.stdout)["nftables"][1]["set"]["elem"]
        assert sorted(ports) == sorted({own_port, 7000})
        host.stop()
        assert tables(bridge) == []
    finally:
        network.remove_bridge(bridge)
