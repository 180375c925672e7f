"""A hostile guest: from inside its sandbox it tries every way out the issue
names, and prints one JSON line saying what each attempt got. It never
reports success by assumption: each entry is what the attempt itself saw.

Environment (besides the guest's own):
  HOSTILE_DB            a service's database file on the host
  HOSTILE_HOST_PORTS    host ports guests must not reach, comma-separated
  HOSTILE_PEER_PORT     the port every hostile guest listens on (to reach each other)
  HOSTILE_METADATA      the metadata address to try (host:port)
  HOSTILE_MARKER        a value only a host process's environment holds, reversed
                        (so this guest's own environment does not hold it)
  HOSTILE_GATEWAY       the host's address on the bridge
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from swarmagent import selfcheck
from swarmagent.selfcheck import connect, listen, peers, reach_peers

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
RESULTS: dict[str, Any] = {}


def setns_host_net() -> str:
    """What `nsenter --net=/proc/1/ns/net` does, then prove it by the namespace we are in."""
    before = os.stat("/proc/self/ns/net").st_ino
    fd = os.open("/proc/1/ns/net", os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    after = os.stat("/proc/self/ns/net").st_ino
    return f"{before}->{after}"


def host_environ() -> str:
    """Any process environment holding the host's marker (pid 1's or another's)."""
    marker = os.environ["HOSTILE_MARKER"][::-1]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                data = open(f"/proc/{entry}/environ", "rb").read()
            except OSError:
                continue
            if marker.encode() in data:
                return f"found in /proc/{entry}/environ"
    raise LookupError("the marker is in no environment this guest can read")


def other_guests() -> str:
    """Any other agent's id in an environment this guest can read."""
    own = os.environ["SWARM_AGENT_ID"]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                data = open(f"/proc/{entry}/environ", "rb").read()
            except OSError:
                continue
            for item in data.split(b"\0"):
                if item.startswith(b"SWARM_AGENT_ID=") and item.split(b"=", 1)[1].decode() != own:
                    return f"another guest's environment in /proc/{entry}"
    raise LookupError("no other guest's environment is visible")


def new_user_namespace() -> str:
    """unshare(CLONE_NEWUSER): inside one, a guest is root again (and many
    kernel holes start there). Tried in a forked, single-threaded child: the
    kernel refuses a multi-threaded caller anyway, and the attempt must not
    fail for that reason."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one thread
        libc = ctypes.CDLL(None, use_errno=True)
        err = 0 if libc.unshare(CLONE_NEWUSER) == 0 else ctypes.get_errno()
        os.write(w, str(err).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        answer = f.read()
    os.waitpid(pid, 0)
    err = int(answer or b"-1")
    if err != 0:
        raise OSError(err, os.strerror(err) if err > 0 else "the child reported nothing")
    return "a new user namespace"


def mount_tmpfs() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return "mounted"


def read_database() -> int:
    with open(os.environ["HOSTILE_DB"], "rb") as f:
        return len(f.read(100))


def leave_cgroup() -> str:
    """Join the root of each cgroup hierarchy (v1 and v2 file names)."""
    joined = []
    for path in (
        "/sys/fs/cgroup/cgroup.procs",
        "/sys/fs/cgroup/memory/cgroup.procs",
        "/sys/fs/cgroup/pids/tasks",
    ):
        try:
            with open(path, "w") as f:
                f.write(str(os.getpid()))
            joined.append(path)
        except OSError:
            continue
    if not joined:
        raise PermissionError("no cgroup could be joined")
    return ",".join(joined)


def raw_socket() -> str:
    """A raw link-layer socket: what ARP or IP spoofing needs."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    s.close()
    return "opened"


def set_address(peer: str) -> str:
    """Claim another guest's address: as `ip addr add` would (SIOCSIFADDR needs CAP_NET_ADMIN)."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH2s4s8s", b"eth0", socket.AF_INET, b"\0\0", socket.inet_aton(peer), b"\0" * 8)
        fcntl.ioctl(s.fileno(), 0x8916, ifreq)  # SIOCSIFADDR
    return f"now {peer}"


def attempt(name: str, fn: Callable[[], object]) -> None:
    selfcheck.attempt(RESULTS, name, fn)


def main() -> int:
    peer_port = int(os.environ["HOSTILE_PEER_PORT"])
    once = "--once" in sys.argv  # run by a guest's work function, which listens and returns the report
    if not once:
        listen(peer_port)
    time.sleep(float(os.environ.get("HOSTILE_SETTLE_SECONDS", "2")))  # the other guests listen too
    gateway = os.environ["HOSTILE_GATEWAY"]
    own = os.environ.get("SWARM_AGENT_ADDRESS", "")
    attempt("uid", os.getuid)
    attempt("nsenter_host_network", setns_host_net)
    attempt("new_user_namespace", new_user_namespace)
    attempt("mount", mount_tmpfs)
    attempt("read_host_environ", host_environ)
    attempt("read_other_guest_environ", other_guests)
    attempt("read_service_database", read_database)
    attempt("leave_cgroup", leave_cgroup)
    attempt("raw_socket", raw_socket)
    attempt("take_peer_address", lambda: set_address(peers(own, gateway)[0]))
    attempt("reach_other_guests", lambda: reach_peers(own, gateway, peer_port))
    for port in os.environ.get("HOSTILE_HOST_PORTS", "").split(","):
        if port:
            attempt(f"reach_host_port_{port}", lambda p=int(port): connect(gateway, p))
    # The control: what a guest is for still works (vmhost's port for guests).
    vmhost, _, vmhost_port = os.environ["SWARM_VMHOST_TARGET"].rpartition(":")
    attempt("reach_vmhost", lambda: connect(vmhost, int(vmhost_port)))
    host, _, port = os.environ["HOSTILE_METADATA"].rpartition(":")
    attempt("reach_metadata", lambda: connect(host, int(port)))
    sys.stdout.write("HOSTILE " + json.dumps(RESULTS) + "\n")
    sys.stdout.flush()
    if not once:
        time.sleep(3600)  # stay up: the peers may still be probing
    return 0


if __name__ == "__main__":
    sys.exit(main())
