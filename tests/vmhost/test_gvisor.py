"""gVisor guests on a real bridge with real runsc: confined (an unprivileged uid, no
capabilities, gVisor's kernel, a read-only root, none of the host's files),
on the bridge (vmhost answers them), limited (the sandbox and its gofer in
the agent's cgroups), gone without a trace when stopped or when a crash
left them behind; the standard guest heartbeats READY cold and, restored
from the snapshot, much sooner."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pyroute2 import netns

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_vmhost import network, sandbox, tables
from swarm_vmhost.domain import DriverName, GuestSpec
from swarm_vmhost.drivers.gvisor import GvisorDriver
from tests.support.harness import QuotaHarness
from tests.support.status import raises_status
from tests.support.waiting import eventually
from tests.vmhost.harness import REPO, VmHostHarness

PROBE = f"{sys.executable} {REPO / 'tests' / 'vmhost' / 'gvisor_guest.py'}"
READY = (pb.AGENT_STATE_READY, pb.AGENT_STATE_BUSY)


def _probe_host(make_vmhost: Callable[..., VmHostHarness], **kw: Any) -> VmHostHarness:
    """vmhost whose gvisor guests run the probe; the database file is the host file they must not see."""
    db_file = Path(kw.pop("db_file", "/etc/shadow"))
    return make_vmhost(
        guest_command=PROBE,
        default_driver="gvisor",
        guest_env=f"PROBE_HOST_FILE={db_file}",
        **kw,
    )


def _spawn(host: VmHostHarness, **kw: Any) -> pb.Agent:
    return host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme", template="default", **kw)).agent


def _driver(host: VmHostHarness) -> GvisorDriver:
    driver = host.app.host.drivers[DriverName.GVISOR]
    assert isinstance(driver, GvisorDriver)
    return driver


def _report(host: VmHostHarness, agent_id: str) -> dict[str, Any]:
    log = Path(host.settings.workroot).resolve() / "guests" / agent_id / "guest.log"

    def reported() -> dict[str, Any] | None:
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            if line.startswith("{"):
                return dict(json.loads(line))
        return None

    return eventually(reported, timeout=60, interval=0.1, what=f"the guest's report in {log}")


def _containers(driver: GvisorDriver) -> list[str]:
    return driver._runsc_out("list", "-quiet").split()


def _spawn_until_ready(host: VmHostHarness, timeout: float) -> tuple[pb.Agent, float]:
    """A new agent, and the seconds from SpawnAgent to its first heartbeat (READY)."""
    started = time.monotonic()
    agent = _spawn(host)

    def ready() -> bool:
        found = host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=agent.id)).agent
        return found.state in READY

    eventually(ready, timeout=timeout, interval=0.01, what=f"agent {agent.id} READY")
    return agent, time.monotonic() - started


def test_a_gvisor_guest_runs_confined_and_reaches_vmhost_on_the_bridge(
    make_vmhost: Callable[..., VmHostHarness], db: str
) -> None:
    db_file = db.removeprefix("sqlite:///") if db.startswith("sqlite:///") else "/etc/shadow"
    host = _probe_host(make_vmhost, db_file=db_file)
    drivers = {d.driver: d for d in host.stub.ListDrivers(pb.ListDriversRequest()).drivers}
    gvisor = drivers[pb.DRIVER_GVISOR]
    assert gvisor.available, gvisor.reason
    assert gvisor.is_default and gvisor.isolation == pb.ISOLATION_USER_KERNEL
    agent = _spawn(host)
    assert agent.driver == pb.DRIVER_GVISOR
    report = _report(host, agent.id)
    assert (report["uid"], report["gid"]) == (sandbox.GUEST_UID, sandbox.GUEST_GID) != (0, 0)
    assert report["groups"] in ([], [sandbox.GUEST_GID])
    assert int(report["cap_eff"], 16) == int(report["cap_prm"], 16) == int(report["cap_bnd"], 16) == 0
    assert report["no_new_privs"] == 1
    # gVisor's kernel answers the guest's system calls, not the host's.
    assert report["kernel"] != f"{os.uname().release} {os.uname().version}"
    assert report["home"] == report["cwd"] == "/home/agent" and report["home_writable"] is True
    mounts = report["mounts"]
    assert "ro" in mounts["/"] and "ro" in mounts["/usr"] and "rw" in mounts["/home/agent"], mounts
    assert report["host_file_visible"] is False and os.path.exists(db_file)
    assert "root" not in report["root_entries"] and "var" not in report["root_entries"]
    assert report["vmhost"] is True, f"vmhost on {host.bridge.address} unreachable: {report['vmhost']}"
    handle = host.app.host.agents.get_any(agent.id).handle
    assert handle is not None and handle.data["sandbox"] == "gvisor" and handle.data["restored"] == "0"


def test_a_gvisor_guest_is_limited_by_its_cgroups_and_stops_without_a_trace(
    make_vmhost: Callable[..., VmHostHarness],
) -> None:
    host = _probe_host(make_vmhost, guest_memory_mb=320, guest_pids=300)
    driver = _driver(host)
    cgroups = driver.cgroups
    agent = _spawn(host)
    handle = host.app.host.agents.get_any(agent.id).handle
    assert handle is not None and handle.pid
    members = cgroups.members(agent.id)
    # The sandbox and its gofer were born in the agent's groups (memory and pids included).
    assert handle.pid in members and len(members) >= 2
    for d in cgroups._dirs(agent.id):
        if (d / "memory.limit_in_bytes").exists():
            assert int((d / "memory.limit_in_bytes").read_text()) == 320 * 1024 * 1024
        if (d / "pids.max").exists():
            assert (d / "pids.max").read_text().strip() == "300"
    assert agent.id in _containers(driver)
    ns = network.netns_name(host.bridge, agent.id)
    assert ns in netns.listnetns()
    done = host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agent.id)).agent
    assert done.state == pb.AGENT_STATE_TERMINATED
    assert agent.id not in _containers(driver)
    assert ns not in netns.listnetns()
    assert not any(d.exists() for d in cgroups._dirs(agent.id))
    assert not any(_alive(pid) for pid in members)
    assert not any((driver.root / kind / agent.id).exists() for kind in ("homes", "bundles"))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_restart_removes_sandboxes_no_agent_owns(make_vmhost: Callable[..., VmHostHarness]) -> None:
    first = _probe_host(make_vmhost)
    orphan = str(uuid.uuid4())
    driver = _driver(first)
    # A sandbox vmhost started and never recorded (it died in between).
    spec = GuestSpec(
        agent_id=orphan,
        tenant_id="acme",
        template="default",
        role="coder",
        address=str(first.bridge.network.network_address + 200),
        prefix_len=first.bridge.prefix_len,
        gateway=first.bridge.address,
        bridge=first.bridge.name,
        env={"PROBE_HOST_FILE": "/etc/shadow", "SWARM_VMHOST_TARGET": f"{first.bridge.address}:1"},
        command=PROBE.split(),
        workdir=str(Path(first.settings.workroot).resolve() / "guests" / orphan),
    )
    driver.start(spec)
    kept = _spawn(first)
    assert {orphan, kept.id} <= set(_containers(driver))
    second = _probe_host(make_vmhost)
    assert orphan in second.app.reconciled and network.short_id(orphan) in second.app.reconciled
    assert orphan not in _containers(driver) and kept.id in _containers(driver)
    assert network.netns_name(first.bridge, orphan) not in netns.listnetns()
    assert network.netns_name(first.bridge, kept.id) in netns.listnetns()
    assert not (driver.root / "homes" / orphan).exists()
    assert not any(d.exists() for d in driver.cgroups._dirs(orphan))


def test_the_standard_guest_heartbeats_cold_and_restored_from_the_snapshot_much_sooner(
    make_vmhost: Callable[..., VmHostHarness], spans: InMemorySpanExporter
) -> None:
    host = make_vmhost(default_driver="gvisor", warm_guests=1, start_timeout_seconds=120)
    driver = _driver(host)
    cold, _ = _spawn_until_ready(host, timeout=120)  # no snapshot yet: started cold
    handle = host.app.host.agents.get_any(cold.id).handle
    assert handle is not None and handle.data["restored"] == "0"
    assert driver.wait_warm(300), "the gVisor snapshot was never ready"
    assert driver.template is not None
    restored_seconds, ahead = [], []
    for _ in range(2):
        agent, seconds = _spawn_until_ready(host, timeout=60)
        restored_seconds.append(seconds)
        handle = host.app.host.agents.get_any(agent.id).handle
        assert handle is not None and handle.data["restored"] == "1" and float(handle.data["restore_ms"]) > 0
        # Restored ahead of the spawn when the pool had one, else on demand.
        ahead.append(handle.data.get("restored_ahead") == "1")
        restore = [s for s in spans.get_finished_spans() if s.name == "vm.restore"]
        assert any(s.attributes and s.attributes.get("swarm.agent_id") == agent.id for s in restore)
        assert not (driver.root / "homes" / agent.id / ".swarm-assignment").exists()  # read and deleted
    # A restored guest heartbeats with the runtime imported: a cold sandbox gets there
    # only after importing it (the snapshot's own cold start, timed on this host now).
    assert max(restored_seconds) < driver.template.cold_seconds / 2, (
        restored_seconds,
        driver.template.cold_seconds,
    )
    assert ahead[0], "wait_warm waited for a guest restored ahead: the first spawn takes it"
    # A snapshot that no longer restores is dropped: guests start cold instead, and work
    # (a guest restored before it broke may go first).
    (driver.template.image / "checkpoint.img").write_bytes(b"not a checkpoint")
    for _ in range(3):
        agent, _ = _spawn_until_ready(host, timeout=120)
        handle = host.app.host.agents.get_any(agent.id).handle
        assert handle is not None
        if handle.data["restored"] == "0":
            break
    assert handle.data["restored"] == "0" and driver.template is None


def _held(host: VmHostHarness) -> dict[str, str]:
    """agent id -> address, for every address held (by agents, or for guests readied ahead)."""
    with host.app.db.engine.connect() as conn:
        return {r.agent_id: r.address for r in conn.execute(sa.select(tables.addresses))}


def test_a_guest_restored_ahead_becomes_the_agent_survives_a_refusal_and_goes_after_a_crash(
    make_vmhost: Callable[..., VmHostHarness], quota: QuotaHarness
) -> None:
    one_vm = qpb.QuotaOverride(resource=qpb.RESOURCE_VMS, limit=1)
    quota.stub.CreateTenant(qpb.CreateTenantRequest(tenant_id="acme", plan=qpb.PLAN_PRO, overrides=[one_vm]))
    host = make_vmhost(
        default_driver="gvisor", warm_guests=1, quota_target=quota.target, start_timeout_seconds=120
    )
    driver = _driver(host)
    assert driver.wait_warm(300) and driver.ahead is not None
    [ready] = driver.ahead.ready_ids()
    address = _held(host)[ready]  # held before any agent has it
    assert ready in _containers(driver)

    # The spawn names the agent after the ready guest: same id, same address, no restore to wait for.
    agent = _spawn(host)
    assert (agent.id, agent.address) == (ready, address)
    handle = host.app.host.agents.get_any(agent.id).handle
    assert handle is not None and handle.data["restored_ahead"] == "1"
    eventually(lambda: _agent(host, agent.id).state in READY, timeout=30, interval=0.02, what="its heartbeat")

    # Refused by quota: the next ready guest is not wasted, its address stays held.
    nxt = eventually(driver.ahead.ready_ids, timeout=120, what="a guest restored ahead again")[0]
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "VM limit reached"):
        _spawn(host)
    assert driver.ahead.ready_ids() == [nxt] and nxt in _held(host) and nxt in _containers(driver)
    assert [a.id for a in host.stub.ListAgents(pb.ListAgentsRequest(tenant_id="acme")).agents] == [agent.id]

    # A crash leaves it without an agent: the next vmhost on this bridge removes the
    # sandbox and gives its address back, once; the agent's own guest stays.
    second = make_vmhost(default_driver="gvisor", warm_guests=0)
    assert f"{nxt}: address held for a guest no agent took released" in second.app.reconciled
    assert nxt not in _containers(driver) and agent.id in _containers(driver)
    held = _held(second)
    assert nxt not in held and held[agent.id] == address


def _agent(host: VmHostHarness, agent_id: str) -> pb.Agent:
    return host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=agent_id)).agent


def test_a_guest_that_needs_more_mounts_than_a_ready_one_has_is_restored_for_itself(
    make_vmhost: Callable[..., VmHostHarness], tmp_path: Path
) -> None:
    # Local repositories: each guest binds its own tenant's directory, which
    # no guest restored ahead (before its tenant was known) has.
    repos = tmp_path / "repos"
    (repos / "acme").mkdir(parents=True)
    host = make_vmhost(
        default_driver="gvisor", warm_guests=1, local_repository_root=str(repos), start_timeout_seconds=120
    )
    driver = _driver(host)
    assert driver.wait_warm(300) and driver.ahead is not None
    [ready] = driver.ahead.ready_ids()
    address = _held(host)[ready]
    agent = _spawn(host)
    # The spawn took the ready guest's id and address, then restored a guest with its mounts.
    assert (agent.id, agent.address) == (ready, address)
    handle = host.app.host.agents.get_any(agent.id).handle
    assert handle is not None and handle.data["restored"] == "1" and "restored_ahead" not in handle.data
    eventually(lambda: _agent(host, agent.id).state in READY, timeout=60, interval=0.05, what="its heartbeat")
    assert _containers(driver).count(agent.id) == 1
