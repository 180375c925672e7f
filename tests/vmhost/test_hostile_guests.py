"""A hostile guest in each isolating driver tries every way out: into the
host's network namespace, other processes' environments, a service's
database, out of its cgroup, spoofing another guest's address, reaching
another guest, ports on the host that are not for guests, the metadata
address. Every attempt must fail, and each is asserted on its own.

The guest program (hostile.py) reports what each attempt itself saw; the
host side checks what it can check from outside too (the guest's network
namespace and cgroup as the kernel has them).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_vmhost import sandbox
from tests.support.waiting import eventually
from tests.vmhost.harness import REPO, VmHostHarness

HOSTILE = f"{sys.executable} {REPO / 'tests' / 'vmhost' / 'hostile.py'}"
PEER_PORT = 7788
METADATA = "169.254.169.254"
DRIVERS = ["netns", "gvisor"]


def _listener(address: str, port: int = 0) -> tuple[socket.socket, int]:
    server = socket.create_server((address, port))

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


def _metadata_server(host: VmHostHarness) -> tuple[socket.socket, int]:
    """169.254.169.254 on the host (an extra address of the test's own bridge,
    gone with it), answering on a port: what a cloud's metadata service looks
    like from a guest. Nothing leaves the machine."""
    with IPRoute() as ip:
        index = ip.link_lookup(ifname=host.bridge.name)[0]
        ip.addr("add", index=index, address=METADATA, prefixlen=32)
    return _listener(METADATA)


@pytest.fixture
def host_secret() -> Iterator[str]:
    """A host process whose environment holds a secret no guest may read."""
    secret = f"hostsecret-{secrets.token_hex(8)}"
    proc = subprocess.Popen(["sleep", "600"], env={"PATH": "/usr/bin:/bin", "PLATFORM_SECRET": secret})
    try:
        yield secret
    finally:
        proc.kill()
        proc.wait()


def _report(host: VmHostHarness, agent_id: str) -> dict[str, Any]:
    log = Path(host.settings.workroot) / "guests" / agent_id / "guest.log"

    def reported() -> str | None:
        text = log.read_text() if log.exists() else ""
        line = next((x for x in text.splitlines() if x.startswith("HOSTILE ")), None)
        return line

    line = eventually(reported, timeout=90, interval=0.2, what=f"the hostile guest's report in {log}")
    return json.loads(line.removeprefix("HOSTILE "))  # type: ignore[no-any-return]


def _connects(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((address, port)) == 0


def _pid_of_guest(pid: int) -> int:
    """The guest's Python inside the sandbox (the deepest process under `pid`)."""
    while True:
        children = [
            int(c) for t in Path(f"/proc/{pid}/task").glob("*/children") for c in t.read_text().split()
        ]
        if not children:
            return pid
        pid = children[-1]


def hostile_env(database: str, closed_ports: list[str], metadata_port: int, host_secret: str) -> str:
    """The hostile program's settings (see hostile.py) as vmhost's guest_env."""
    return ";".join(
        [
            f"HOSTILE_DB={database}",
            f"HOSTILE_HOST_PORTS={','.join(['5432', *closed_ports])}",
            f"HOSTILE_PEER_PORT={PEER_PORT}",
            f"HOSTILE_METADATA={METADATA}:{metadata_port}",
            f"HOSTILE_MARKER={host_secret[::-1]}",
            "HOSTILE_GATEWAY={host}",
        ]
    )


def assert_refused(report: dict[str, Any], closed_ports: list[str]) -> None:
    """Every attempt failed, each asserted on its own; the controls worked."""
    # The controls: the guest runs, as its unprivileged uid, and reaches
    # what guests are for (so the failures below are refusals, not a
    # guest without a network).
    assert report["uid"] == {"ok": True, "detail": str(sandbox.GUEST_UID)}, report["uid"]
    assert report["reach_vmhost"]["ok"], report["reach_vmhost"]
    assert not report["nsenter_host_network"]["ok"], report["nsenter_host_network"]
    assert not report["new_user_namespace"]["ok"], report["new_user_namespace"]
    assert not report["mount"]["ok"], report["mount"]
    assert not report["read_host_environ"]["ok"], report["read_host_environ"]
    assert not report["read_other_guest_environ"]["ok"], report["read_other_guest_environ"]
    assert not report["read_service_database"]["ok"], report["read_service_database"]
    assert not report["leave_cgroup"]["ok"], report["leave_cgroup"]
    assert not report["raw_socket"]["ok"], report["raw_socket"]
    assert not report["take_peer_address"]["ok"], report["take_peer_address"]
    assert not report["reach_other_guests"]["ok"], report["reach_other_guests"]
    for port in ["5432", *closed_ports]:
        assert not report[f"reach_host_port_{port}"]["ok"], (port, report[f"reach_host_port_{port}"])
    assert not report["reach_metadata"]["ok"], report["reach_metadata"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_hostile_guest_gets_out_nowhere(
    driver: str,
    make_vmhost: Callable[..., VmHostHarness],
    db: str,
    host_secret: str,
) -> None:
    # Listeners on every address of the host standing in for PostgreSQL and
    # for the quota and events services: not guest ports.
    stand_ins = [_listener("0.0.0.0") for _ in range(3)]
    closed_ports = [str(p) for _, p in stand_ins]
    database = db.removeprefix("sqlite:///")
    # The metadata port is known once the bridge is: a first vmhost makes it.
    metadata, metadata_port = _metadata_server(make_vmhost(default_driver="process", warm_guests=0))
    stand_ins.append((metadata, metadata_port))
    host = make_vmhost(
        guest_command=HOSTILE,
        default_driver=driver,
        guest_env=hostile_env(database, closed_ports, metadata_port, host_secret),
    )
    assert os.path.isfile(database)
    try:
        agents = [
            host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id=t, template="default")).agent
            for t in ("tenant-a", "tenant-b")
        ]
        reports = {a.id: _report(host, a.id) for a in agents}
    finally:
        for server, _ in stand_ins:
            server.close()
    host_netns = os.stat("/proc/self/ns/net").st_ino
    # The peers' control: each guest's listener is up (the host reaches it),
    # so "no other guest reached" is the bridge refusing, not nobody listening.
    for agent in agents:
        eventually(
            lambda a=agent: _connects(a.address, PEER_PORT), timeout=30, what=f"{agent.address} listening"
        )
    for agent in agents:
        assert_refused(reports[agent.id], closed_ports)
        # And as the kernel sees the guest from outside: still in its own
        # network namespace and in its agent's cgroup.
        handle = host.app.host.agents.get(agent.tenant_id, agent.id).handle
        assert handle is not None and handle.pid is not None
        guest = _pid_of_guest(handle.pid)
        assert os.stat(f"/proc/{guest}/ns/net").st_ino != host_netns
        cgroups = Path(f"/proc/{guest}/cgroup").read_text()
        assert f"/{agent.id}" in cgroups, cgroups
