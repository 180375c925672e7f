"""What a guest on the bridge may send, enforced with nftables.

Every guest is hostile. Isolated bridge ports (swarm_vmhost.network) keep
guests apart at layer 2, but leave open: spoofing (a guest sending with
another guest's MAC or address, or answering ARP for it), routing through
the host (`swarm0 → swarm0` wherever ip_forward=1), every host listener on
0.0.0.0 (PostgreSQL included) and whatever the host routes to (cloud
metadata at 169.254.169.254). Two tables per bridge, both `vmhost_<bridge>`
(vmhosts and test runs on other bridges never touch each other's rules):

bridge family, frames as they enter the bridge:
  prerouting  a frame from a pinned port jumps to its guest's chain, which
              accepts its MAC as source, IPv4 from its address, and ARP whose
              sender is that MAC and address; anything else is dropped
              (IPv6, VLAN tags, other ethertypes included).
  forward     nothing is bridged from or to a pinned port (guest → guest).
inet family, packets the host receives or routes from the bridge:
  input       replies (established/related) and new TCP connections to the
              bridge address on the agent-facing ports; nothing else.
  forward     never back out of the bridge; never to link-local, shared
              (100.64.0.0/10) or metadata addresses, allow-listed or not;
              otherwise only the operator's allow-list.

This kernel has no `meta ibrname` (CONFIG_NFT_BRIDGE_META is off), so the
bridge-family chains recognise this bridge's ports by their pins: a port
nobody pinned is not filtered at layer 2, though it still meets the inet
rules. Pins are keyed by agent id (a chain `guest_<agent id>`, jumped to from
the `ports` map by port name), so they can be removed and reconciled with
the agents that own them.

Every change is one `nft -f -` transaction, applied atomically: a guest never
meets half a ruleset. Names written into a ruleset are checked first.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swarm_vmhost.network import Bridge

log = logging.getLogger(__name__)

NFT = shutil.which("nft") or "/usr/sbin/nft"
TABLE_PREFIX = "vmhost_"
CHAIN_PREFIX = "guest_"
# Never reachable from a guest, whatever the allow-list says: link-local
# (cloud metadata at 169.254.169.254), shared address space (some clouds'
# metadata, e.g. 100.100.100.200) and EC2's IPv6 metadata address.
ALWAYS_DROPPED_V4 = ("169.254.0.0/16", "100.64.0.0/10")
ALWAYS_DROPPED_V6 = ("fd00:ec2::254",)
PROTOCOLS = ("tcp", "udp")

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # bridges, agent ids, ports: safe inside a ruleset
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


class FirewallError(Exception):
    """nft could not run or refused a change (the message is nft's own), or a
    name is not safe to write into a ruleset."""


@dataclass(frozen=True)
class Egress:
    """One allow-listed destination beyond the host."""

    network: ipaddress.IPv4Network
    port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return f"{self.network}:{self.port}/{self.protocol}"


@dataclass(frozen=True)
class Policy:
    """What guests on a bridge may reach: `host_ports` (TCP) on the bridge
    address, and `egress` beyond the host."""

    host_ports: frozenset[int]
    egress: tuple[Egress, ...] = ()


def _port(text: str, what: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{what}: {text!r} is not a port (1-65535)")
    return int(text)


def parse_ports(text: str) -> frozenset[int]:
    """ "7000,7001" → {7000, 7001}."""
    return frozenset(_port(p, "port") for p in text.split(",") if p.strip())


def parse_egress(text: str) -> tuple[Egress, ...]:
    """ "10.1.2.3/32:443,192.0.2.0/24:53/udp" → the allow-list (TCP unless
    "/udp"). IPv4 only: guests have no IPv6 beyond their link."""
    found = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        cidr, sep, rest = entry.rpartition(":")
        port, _, protocol = rest.partition("/")
        protocol = protocol or "tcp"
        if not sep or protocol not in PROTOCOLS:
            raise ValueError(f"egress {entry!r}: expected CIDR:PORT or CIDR:PORT/udp")
        try:
            network = ipaddress.IPv4Network(cidr)
        except ValueError as exc:
            raise ValueError(f"egress {entry!r}: {exc} (IPv4 networks only)") from exc
        found.append(Egress(network, _port(port, f"egress {entry!r}"), protocol))
    return tuple(found)


def table(bridge_name: str) -> str:
    """Both of a bridge's tables (bridge and inet family) have this name."""
    if not _NAME.fullmatch(bridge_name):
        raise FirewallError(f"bridge name {bridge_name!r} cannot name an nftables table")
    return f"{TABLE_PREFIX}{bridge_name}"


def _chain(agent_id: str) -> str:
    if not _NAME.fullmatch(agent_id):
        raise FirewallError(f"agent id {agent_id!r} cannot name an nftables chain")
    return f"{CHAIN_PREFIX}{agent_id}"


# -- rulesets -------------------------------------------------------------------------------------


def _skeleton(t: str) -> list[str]:
    """The bridge-family table and its port map: where pins go, whether or
    not the policy is installed yet (`add` is a no-op for what exists)."""
    return [f"add table bridge {t}", f"add map bridge {t} ports {{ type ifname : verdict; }}"]


def _base_chain(family: str, t: str, name: str, hook: str, rules: Iterable[str]) -> list[str]:
    """A base chain holding exactly `rules` (replaced, not appended to)."""
    return [
        f"add chain {family} {t} {name} {{ type filter hook {hook} priority filter; policy accept; }}",
        f"flush chain {family} {t} {name}",
        *(f"add rule {family} {t} {name} {r}" for r in rules),
    ]


def _install_script(dev: str, bridge_address: str, policy: Policy) -> str:
    t, address = table(dev), ipaddress.IPv4Address(bridge_address)
    ports = sorted(_port(str(p), "host port") for p in policy.host_ports)
    dropped_v4 = ", ".join(ALWAYS_DROPPED_V4)
    dropped_v6 = ", ".join(ALWAYS_DROPPED_V6)
    lines = [
        *_skeleton(t),
        *_base_chain("bridge", t, "prerouting", "prerouting", ["iifname vmap @ports"]),
        *_base_chain("bridge", t, "forward", "forward", ["iifname @ports drop", "oifname @ports drop"]),
        f"add table inet {t}",
        f"add set inet {t} host_ports {{ type inet_service; }}",
        f"flush set inet {t} host_ports",
    ]
    if ports:
        lines.append(f"add element inet {t} host_ports {{ {', '.join(map(str, ports))} }}")
    lines += _base_chain(
        "inet",
        t,
        "input",
        "input",
        [
            f'iifname != "{dev}" return',
            "ct state established,related accept",
            f"ip daddr {address} tcp dport @host_ports accept",
            "drop",
        ],
    )
    lines += _base_chain(
        "inet",
        t,
        "forward",
        "forward",
        [
            f'iifname != "{dev}" return',
            f'oifname "{dev}" drop',
            f"ip daddr {{ {dropped_v4} }} drop",
            f"ip6 daddr {{ {dropped_v6} }} drop",
            "meta nfproto ipv6 drop",
            "ct state established,related accept",
            *(f"ip daddr {e.network} {e.protocol} dport {e.port} accept" for e in policy.egress),
            "drop",
        ],
    )
    return "\n".join(lines) + "\n"


def _pin_script(dev: str, agent_id: str, mac: str, ip: str, port: str) -> str:
    t, chain = table(dev), _chain(agent_id)
    if not _MAC.fullmatch(mac):
        raise FirewallError(f"{mac!r} is not a MAC address (lower-case aa:bb:cc:dd:ee:ff)")
    if not _NAME.fullmatch(port):
        raise FirewallError(f"port {port!r} cannot be named in an nftables rule")
    address = ipaddress.IPv4Address(ip)
    arp = f"arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether {mac} arp saddr ip {address}"
    lines = [
        *_skeleton(t),
        f"add chain bridge {t} {chain}",
        f"flush chain bridge {t} {chain}",
        f"add rule bridge {t} {chain} ether saddr != {mac} drop",
        f"add rule bridge {t} {chain} {arp} accept",
        f"add rule bridge {t} {chain} ip saddr {address} accept",
        f"add rule bridge {t} {chain} drop",
        f'add element bridge {t} ports {{ "{port}" : jump {chain} }}',
    ]
    return "\n".join(lines) + "\n"


def _unpin_script(t: str, agent_ids: Iterable[str], found: dict[str, list[str]]) -> str:
    lines = []
    for agent_id in agent_ids:
        chain = _chain(agent_id)
        lines += [f'delete element bridge {t} ports {{ "{port}" }}' for port in found.get(agent_id, [])]
        lines += [f"flush chain bridge {t} {chain}", f"delete chain bridge {t} {chain}"]
    return "\n".join(lines) + "\n"


# -- running nft ----------------------------------------------------------------------------------


def _nft(*args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [NFT, *args], input=script, capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError as exc:
        raise FirewallError(f"{NFT} not found: install nftables (`make setup` does)") from exc


def _installed() -> bool:
    return os.access(NFT, os.X_OK)


def _apply(script: str) -> None:
    done = _nft("-f", "-", script=script)
    if done.returncode != 0:
        raise FirewallError(f"nft: {done.stderr.strip()}")


def probe() -> str | None:
    """None when nft runs and the kernel takes every rule this module writes
    (checked, not applied: `nft --check`), else why not."""
    policy = Policy(frozenset({1}), (Egress(ipaddress.IPv4Network("192.0.2.0/24"), 1),))
    script = _install_script("probe0", "192.0.2.1", policy) + _pin_script(
        "probe0", "probe", "02:00:00:00:00:01", "192.0.2.2", "probe0p"
    )
    try:
        done = _nft("--check", "-f", "-", script=script)
    except FirewallError as exc:
        return str(exc)
    return None if done.returncode == 0 else f"nft: {done.stderr.strip()}"


# -- the API --------------------------------------------------------------------------------------


def install(bridge: Bridge, policy: Policy) -> None:
    """Put `policy` in force on `bridge`, replacing an older one and keeping
    the guests' pins. Idempotent."""
    _apply(_install_script(bridge.name, bridge.address, policy))
    log.info(
        "guest filter installed",
        extra={
            "bridge": bridge.name,
            "host_ports": sorted(policy.host_ports),
            "egress": [str(e) for e in policy.egress],
        },
    )


def pin(bridge: Bridge, agent_id: str, mac: str, ip: str, port: str) -> None:
    """From bridge port `port`, accept only frames from `mac`, IPv4 from `ip`
    and ARP saying "`ip` is at `mac`"; nothing is bridged to or from it.
    Works before the port exists (rules match its name), so a new guest is
    never unpinned. Pinning again replaces the guest's rules."""
    _apply(_pin_script(bridge.name, agent_id, mac, ip, port))


def pins(bridge: Bridge) -> dict[str, list[str]]:
    """Agent id → the ports pinned for it (none without nft or the bridge's table)."""
    if not _installed():
        return {}
    done = _nft("-j", "list", "table", "bridge", table(bridge.name))
    if done.returncode != 0:
        return {}
    found: dict[str, list[str]] = {}
    for item in json.loads(done.stdout)["nftables"]:
        chain: dict[str, Any] = item.get("chain", {})
        if chain.get("name", "").startswith(CHAIN_PREFIX):
            found.setdefault(chain["name"].removeprefix(CHAIN_PREFIX), [])
        ports: dict[str, Any] = item.get("map", {})
        if ports.get("name") == "ports":
            for port, verdict in ports.get("elem", []):
                target = str(verdict.get("jump", {}).get("target", ""))
                found.setdefault(target.removeprefix(CHAIN_PREFIX), []).append(port)
    return found


def _remove_pins(bridge: Bridge, agent_ids: set[str]) -> list[str]:
    """Remove the pins of `agent_ids` that exist; returns those found. A
    concurrent removal of the same pin makes nft fail: the pins are read
    again, and only a pin still there is an error."""
    found = pins(bridge)
    present = sorted(agent_ids & found.keys())
    try:
        if present:
            _apply(_unpin_script(table(bridge.name), present, found))
    except FirewallError:
        found = pins(bridge)
        present = sorted(agent_ids & found.keys())
        if present:
            _apply(_unpin_script(table(bridge.name), present, found))
    return present


def unpin(bridge: Bridge, agent_id: str) -> bool:
    """Remove the guest's pin. Its port would be unfiltered at layer 2 from
    then on: remove the port first. Returns whether there was a pin."""
    return bool(_remove_pins(bridge, {agent_id}))


def reconcile(bridge: Bridge, known_agent_ids: Iterable[str]) -> list[str]:
    """Remove the pins of guests not in `known_agent_ids` (left by a vmhost
    that died); returns their agent ids."""
    stale = _remove_pins(bridge, set(pins(bridge)) - set(known_agent_ids))
    for agent_id in stale:
        log.info("stale guest pin removed", extra={"bridge": bridge.name, "agent_id": agent_id})
    return stale


def remove(bridge: Bridge) -> None:
    """Remove both of the bridge's tables, pins included. Idempotent (each
    table is added before it is deleted, in one transaction); nothing to do
    where nft is missing, as nothing can have been installed."""
    t = table(bridge.name)
    if _installed():
        _apply(f"add table bridge {t}\ndelete table bridge {t}\nadd table inet {t}\ndelete table inet {t}\n")
