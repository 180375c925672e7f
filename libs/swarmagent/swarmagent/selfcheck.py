"""An isolation self-check from inside a guest: it tries the ways off its
own port of the bridge that a hostile guest would, and reports what each
attempt itself saw. Nothing is reported as refused by assumption.

For operators and tests, opt in per host with
`SWARM_VMHOST_GUEST_WORK=swarmagent.selfcheck:work` on a bridge of its
own: each claimed ticket's result is the report. As a work function it
is meant for a VM (qemu), where the guest is root in its own kernel, so
the bridge filter (swarm_vmhost.firewall) is all that stands between it
and the others: it spoofs another guest's address and MAC, floods the
bridge with an ARP reply claiming another guest's address, and tries the
host's ports that are not for guests and the metadata address. It puts
its own address and MAC back after each attempt and checks that its
control (vmhost's port) still answers.

Environment (besides the guest's own):
  SWARM_SELFCHECK_HOST_PORTS  host ports guests must not reach, comma-separated
  SWARM_SELFCHECK_PEER_PORT   the port every checking guest listens on (to reach each other)
  SWARM_SELFCHECK_METADATA    the metadata address to try (host:port)
  SWARM_SELFCHECK_SETTLE      seconds to wait for the other guests to listen (default 3)
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from swarmagent.client import ClaimedTicket

IFACE = "eth0"
ETH_P_ARP = 0x0806


def attempt(results: dict[str, Any], name: str, fn: Callable[[], object]) -> None:
    """Run one attempt; its outcome under `name`: ok and what it got, or the error."""
    try:
        results[name] = {"ok": True, "detail": str(fn())[:300]}
    except Exception as exc:  # noqa: BLE001 - every failure is the answer
        results[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}


def connect(host: str, port: int, timeout: float = 1.5, source: str = "") -> str:
    bind = (source, 0) if source else None
    with socket.create_connection((host, port), timeout=timeout, source_address=bind):
        return f"connected to {host}:{port}" + (f" from {source}" if source else "")


def gateway() -> str:
    """The host's address on the bridge (where vmhost's port is)."""
    return os.environ["SWARM_VMHOST_TARGET"].rpartition(":")[0]


def vmhost_port() -> int:
    return int(os.environ["SWARM_VMHOST_TARGET"].rpartition(":")[2])


def peers(own: str, bridge_gateway: str, count: int = 5) -> list[str]:
    """The first addresses after the gateway's, this guest's own left out."""
    net = ipaddress.ip_network(f"{bridge_gateway}/24", strict=False)
    return [str(h) for h in list(net.hosts())[1 : count + 1] if str(h) != own]


def reach_peers(own: str, bridge_gateway: str, port: int) -> str:
    reached = []
    for peer in peers(own, bridge_gateway):
        try:
            connect(peer, port, timeout=0.7)
            reached.append(peer)
        except OSError:
            continue
    if not reached:
        raise ConnectionError("no other guest reached")
    return ",".join(reached)


def listen(port: int) -> None:
    """Accept (and close) connections on `port` until the process ends: the other guests' target."""
    server = socket.create_server(("0.0.0.0", port))

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            conn.close()

    threading.Thread(target=serve, name="selfcheck-listener", daemon=True).start()


def _ip(*args: str) -> None:
    done = subprocess.run(["busybox", "ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _mac() -> str:
    with open(f"/sys/class/net/{IFACE}/address") as f:
        return f.read().strip()


def as_peer_address(peer: str) -> str:
    """Take `peer`'s address as a second one and talk to vmhost from it."""
    _ip("addr", "add", f"{peer}/32", "dev", IFACE)
    try:
        return connect(gateway(), vmhost_port(), source=peer)
    finally:
        _ip("addr", "del", f"{peer}/32", "dev", IFACE)


def as_other_mac(mac: str) -> str:
    """Send from another MAC (a guest's own address kept) and talk to vmhost."""
    own = _mac()
    _ip("link", "set", IFACE, "address", mac)
    try:
        return connect(gateway(), vmhost_port())
    finally:
        _ip("link", "set", IFACE, "address", own)


def arp_claim(peer: str, bridge_gateway: str, replies: int = 5) -> str:
    """ARP replies to the host saying `peer`'s address is at this guest's MAC
    (what poisons the host's neighbour table); the host's table says whether
    they landed, so this reports only that they were sent."""
    own = bytes.fromhex(_mac().replace(":", ""))
    broadcast = b"\xff" * 6
    arp = (
        b"\x00\x01\x08\x00\x06\x04\x00\x02"  # Ethernet, IPv4, a reply
        + own
        + socket.inet_aton(peer)
        + broadcast
        + socket.inet_aton(bridge_gateway)
    )
    frame = broadcast + own + ETH_P_ARP.to_bytes(2, "big") + arp
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
        s.bind((IFACE, 0))
        for _ in range(replies):
            s.send(frame)
            time.sleep(0.05)
    return f"{replies} ARP replies for {peer} sent"


def run_checks() -> dict[str, Any]:
    own = os.environ.get("SWARM_AGENT_ADDRESS", "").split("/")[0]
    host = gateway()
    results: dict[str, Any] = {"address": own}
    attempt(results, "reach_vmhost", lambda: connect(host, vmhost_port()))  # the control
    peer_port = int(os.environ["SWARM_SELFCHECK_PEER_PORT"])
    attempt(results, "reach_other_guests", lambda: reach_peers(own, host, peer_port))
    for port in filter(None, os.environ.get("SWARM_SELFCHECK_HOST_PORTS", "").split(",")):
        attempt(results, f"reach_host_port_{port}", lambda p=int(port): connect(host, p))  # type: ignore[misc]
    metadata_target = os.environ.get("SWARM_SELFCHECK_METADATA", "169.254.169.254:80")
    metadata, _, metadata_port = metadata_target.rpartition(":")
    attempt(results, "reach_metadata", lambda: connect(metadata, int(metadata_port)))
    peer = peers(own, host)[0]
    attempt(results, "spoof_peer_address", lambda: as_peer_address(peer))
    attempt(results, "spoof_mac", lambda: as_other_mac("02:00:00:00:be:ef"))
    attempt(results, "arp_claim_peer", lambda: arp_claim(peer, host))
    attempt(results, "reach_vmhost_after", lambda: connect(host, vmhost_port()))  # still itself
    results["spoofed_peer"] = peer
    return results


_listening = threading.Lock()
_started: list[int] = []


def work(claimed: ClaimedTicket) -> dict[str, Any]:
    """The work function: listen for the other guests, give them time to do
    the same, then run the checks; the report is the ticket's result."""
    port = int(os.environ["SWARM_SELFCHECK_PEER_PORT"])
    with _listening:
        if not _started:
            listen(port)
            _started.append(port)
            time.sleep(float(os.environ.get("SWARM_SELFCHECK_SETTLE", "3")))
    return {"ticket": claimed.id, **run_checks()}
