"""vmhost's lifecycle across crashes and recycled pids (issue 12, scope 6).

- A guest is its pid *and* its start time. A handle whose pid now names
  another process (the guest exited and the kernel gave its pid to a newer
  one) is never signalled and counts as gone; with a bare pid, as before,
  stopping the guest killed that stranger (reproduced first).
- CgroupTree.kill stops everything a guest started, also what left its
  session with setsid() after a double fork, which signalling the guest's
  process group misses (reproduced first).
- kill -9 of vmhost in the middle of a terminate, then a restart: the
  agent's address and its max_vms reservation come back exactly once. So
  does a reservation quota made just before vmhost died (never recorded),
  and one whose release answer was lost.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from pyroute2 import IPRoute, netns

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm.vmhost.v1 import vmhost_pb2_grpc as pb_grpc
from swarm_vmhost import network
from swarm_vmhost.cgroups import V1_CONTROLLERS, V1_FREEZER, CgroupTree, Limits
from swarm_vmhost.domain import AgentRole, DriverName, GuestHandle, SpawnRequest
from swarm_vmhost.drivers.base import (
    guest_alive,
    guest_identity,
    is_process,
    process_start_time,
    recycled,
    stop_guest,
    with_start_time,
)
from swarm_vmhost.host import reservation_owner
from swarm_vmhost.reconcile import ABANDONED, STUCK_AFTER
from swarm_vmhost.tables import addresses, agents
from swarmcommon.clients import QuotaClient
from swarmcommon.clock import ManualClock
from swarmcommon.db import create_engine
from swarmcommon.grpcclient import channel
from swarmcommon.localproc import start_service
from tests.support.harness import BACKENDS, QuotaHarness
from tests.support.mesh import lossy_proxy
from tests.support.waiting import eventually
from tests.vmhost.harness import VmHostHarness, fresh_bridge

SLEEPER = ["sleep", "600"]
RELEASE = "/swarm.quota.v1.QuotaService/Release"


def _sleeper() -> subprocess.Popen[bytes]:
    """A process in a session of its own (as guests are), standing in for a stranger."""
    return subprocess.Popen(SLEEPER, start_new_session=True)


def _reaped(proc: subprocess.Popen[bytes]) -> None:
    """Reap `proc` as soon as it exits, as init reaps a stranger (a bare pid
    is signalled until it is gone, and a zombie never is)."""
    threading.Thread(target=proc.wait, daemon=True).start()


# -- a guest is its pid and its start time ------------------------------------------------------


def test_a_start_time_is_read_right_whatever_the_process_calls_itself() -> None:
    """A guest names itself: spaces and parentheses in its command name must
    not shift the fields after it (a naive split would read another field)."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.stdin.readline(); "
            "open('/proc/self/comm', 'w').write(') 1 2 (3 4'); print('renamed', flush=True); time.sleep(600)",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        before = process_start_time(child.pid)
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
        assert child.stdout.readline() == b"renamed\n"
        assert Path(f"/proc/{child.pid}/comm").read_text().strip() == ") 1 2 (3 4"
        assert before is not None and process_start_time(child.pid) == before
        own = process_start_time(os.getpid())
        assert own is not None and before >= own  # a child starts after its parent
        assert is_process(child.pid, before) and not is_process(child.pid, before + 1)
    finally:
        child.kill()
        child.wait()


def test_a_recycled_pid_is_never_signalled_and_counts_as_gone() -> None:
    guest = _sleeper()
    recorded = process_start_time(guest.pid)
    assert recorded is not None
    assert with_start_time(GuestHandle("a1", DriverName.PROCESS, pid=guest.pid)).pid_start_time == recorded
    guest.kill()
    guest.wait()  # the guest exited and was reaped: its pid is free for the next process
    # Recorded too late, once the guest is gone: a start time no process has.
    late = with_start_time(GuestHandle("a0", DriverName.PROCESS, pid=guest.pid))
    assert late.pid_start_time is not None and recycled(late) and guest_identity(late).pid is None

    # The attack, as before start times: the pid alone, now held by a stranger.
    stranger = _sleeper()
    _reaped(stranger)
    stop_guest(stranger.pid, None, grace=1)
    assert stranger.wait(timeout=5) == -signal.SIGTERM  # an unrelated process killed

    # A recycled-pid handle: the stranger's pid, the dead guest's start time.
    stranger = _sleeper()
    try:
        handle = GuestHandle("a1", DriverName.PROCESS, pid=stranger.pid, pid_start_time=recorded)
        assert recycled(handle) and guest_identity(handle).pid is None
        assert not guest_alive(handle.pid, None, handle.pid_start_time)
        stop_guest(handle.pid, None, grace=0.2, start_time=handle.pid_start_time)
        assert stranger.poll() is None  # never signalled
        # With its own start time it is that process: stopped through its pidfd.
        own = process_start_time(stranger.pid)
        assert own is not None and guest_alive(stranger.pid, None, own)
        stop_guest(stranger.pid, None, grace=1, start_time=own)
        assert stranger.wait(timeout=5) == -signal.SIGTERM
        assert not guest_alive(stranger.pid, None, own)
    finally:
        stranger.kill()
        stranger.wait()


def test_a_verified_guest_that_ignores_sigterm_is_killed() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
        started = process_start_time(stubborn.pid)
        stop_guest(stubborn.pid, None, grace=0.2, start_time=started)
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
    finally:
        stubborn.kill()
        stubborn.wait()


# -- killing through the cgroup -----------------------------------------------------------------

# Forks, the child calls setsid() and forks again, and exits: the grandchild
# is in no session or process group of the guest's any more.
ESCAPER = textwrap.dedent(
    """
    import os, sys, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open(sys.argv[1] + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(sys.argv[1] + ".tmp", sys.argv[1])
            time.sleep(600)
        os._exit(0)
    time.sleep(600)
    """
)


def _cgroup2_mount() -> Path:
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    pytest.fail("the kernel's cgroup2 hierarchy is not mounted")


def _remove_tree(d: Path) -> None:
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        sub.rmdir()
    d.rmdir()


@pytest.fixture(params=["v1", "v2"])
def cgroup_tree(request: pytest.FixtureRequest) -> Iterator[CgroupTree]:
    """A real cgroup tree of each version this kernel mounts, in a group made
    for the test and removed after; the host's own groups are not touched."""
    name = f"swarm-test-{uuid.uuid4().hex[:8]}"
    if request.param == "v2":
        parent = _cgroup2_mount() / name
        parent.mkdir()
        try:
            yield CgroupTree(parent)
        finally:
            _remove_tree(parent)
        return
    root = Path("/sys/fs/cgroup")
    if CgroupTree(root).version() != 1:
        pytest.skip("this host mounts no cgroup v1 hierarchies")
    tree = CgroupTree(root, group=name)
    try:
        yield tree
    finally:
        for hierarchy in (*V1_CONTROLLERS.values(), V1_FREEZER):
            if (root / hierarchy / name).is_dir():
                _remove_tree(root / hierarchy / name)


def test_a_guest_that_setsids_and_double_forks_dies_with_its_cgroup(
    cgroup_tree: CgroupTree, tmp_path: Path
) -> None:
    placement = cgroup_tree.create("a1", Limits())
    assert placement.dirs
    joins = " && ".join(f"echo $$ > {shlex.quote(str(cgroup_tree.procs_file(d)))}" for d in placement.dirs)
    pidfile = tmp_path / "grandchild"
    guest = subprocess.Popen(
        ["sh", "-c", f'{joins} && exec "$@"', "guest", sys.executable, "-c", ESCAPER, str(pidfile)],
        start_new_session=True,
    )
    try:
        grandchild = int(eventually(lambda: pidfile.exists() and pidfile.read_text(), what="the grandchild"))
        born = process_start_time(grandchild)
        assert born is not None
        assert os.getsid(grandchild) != guest.pid and os.getpgid(grandchild) != guest.pid
        assert grandchild in cgroup_tree.members("a1") and guest.pid in cgroup_tree.members("a1")

        # The old way: the guest's process group. The grandchild is not in it.
        stop_guest(guest.pid, guest, grace=1)
        assert guest_alive(grandchild, None, born)

        assert cgroup_tree.kill("a1")
        eventually(lambda: not guest_alive(grandchild, None, born), what="the grandchild gone")
        assert cgroup_tree.members("a1") == set()
        cgroup_tree.remove("a1")
        assert not any(d.exists() for d in placement.dirs)
        assert cgroup_tree.kill("a1")  # no group left: nothing to do
    finally:
        cgroup_tree.kill("a1")
        guest.kill()
        guest.wait()
        cgroup_tree.remove("a1")


# -- vmhost as a real process, killed with SIGKILL ----------------------------------------------


@dataclass
class VmHostProcess:
    proc: subprocess.Popen[bytes]
    channel: grpc.Channel
    stub: pb_grpc.VmHostServiceStub

    def kill9(self) -> None:
        self.channel.close()
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM: vmhost terminates its live agents on the way out."""
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


@pytest.fixture
def vmhost_process(db: str, tmp_path: Path) -> Iterator[Callable[..., VmHostProcess]]:
    """Start `python -m swarm_vmhost` on one fresh bridge, as often as a test
    restarts it; everything is stopped and removed after."""
    bridge = fresh_bridge()
    started: list[VmHostProcess] = []

    def start(**overrides: str) -> VmHostProcess:
        settings = {
            "DATABASE_URL": db,
            "BRIDGE_NAME": bridge.name,
            "BRIDGE_CIDR": str(bridge.network),
            "WORKROOT": str(tmp_path / "vmhost"),
            "GUEST_COMMAND": shlex.join(SLEEPER),
            "START_TIMEOUT_SECONDS": "600",
            "MONITOR_INTERVAL_SECONDS": "0",
            **overrides,
        }
        log = open(tmp_path / f"vmhost-{len(started)}.log", "wb")  # noqa: SIM115 - the child writes it
        try:
            proc, target = start_service("swarm_vmhost", "SWARM_VMHOST_", settings, output=log)
        finally:
            log.close()
        ch = channel(target)
        started.append(VmHostProcess(proc, ch, pb_grpc.VmHostServiceStub(ch)))
        return started[-1]

    try:
        yield start
    finally:
        for vmhost in started:
            vmhost.stop()
        for name in netns.listnetns():
            if name.startswith(f"{bridge.name}-"):
                netns.remove(name)
        network.remove_bridge(bridge)


def _row(db: str, agent_id: str) -> dict[str, Any]:
    engine = create_engine(db, pool_size=1)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.select(agents).where(agents.c.id == agent_id)).one()._mapping)
    finally:
        engine.dispose()


def _write(db: str, statement: Any) -> None:
    engine = create_engine(db, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(statement)
    finally:
        engine.dispose()


def _addresses(db: str) -> list[str]:
    engine = create_engine(db, pool_size=1)
    try:
        with engine.connect() as conn:
            return sorted(r.address for r in conn.execute(sa.select(addresses)))
    finally:
        engine.dispose()


def _guest(db: str, agent_id: str) -> tuple[int, int]:
    handle = json.loads(_row(db, agent_id)["handle"])
    return handle["pid"], handle["pid_start_time"]


def _vms_used(quota: QuotaHarness, tenant: str = "acme") -> int:
    usage = quota.stub.GetUsage(qpb.GetUsageRequest(tenant_id=tenant)).usages
    return next(u.used for u in usage if u.resource == qpb.RESOURCE_VMS)


def _held_by(quota: QuotaHarness, agent_id: str) -> list[str]:
    listed = quota.stub.ListReservations(
        qpb.ListReservationsRequest(tenant_id="acme", owner=reservation_owner(agent_id))
    )
    return [r.id for r in listed.reservations]


def _process_host(make_vmhost: Callable[..., VmHostHarness], *args: Any, **kw: Any) -> VmHostHarness:
    return make_vmhost(*args, guest_command=shlex.join(SLEEPER), default_driver="process", **kw)


def _spawn(stub: pb_grpc.VmHostServiceStub, **kw: Any) -> pb.Agent:
    return stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme", template="default", **kw)).agent


def _get(stub: pb_grpc.VmHostServiceStub, agent_id: str) -> pb.Agent:
    return stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=agent_id)).agent


def _devices(agent_id: str) -> list[str]:
    """What the netns driver made for the agent that is still on the host."""
    found = [n for n in netns.listnetns() if n.endswith(network.short_id(agent_id))]
    with IPRoute() as ip:
        if ip.link_lookup(ifname=network.host_veth(agent_id)):
            found.append(network.host_veth(agent_id))
    # Whatever tree the driver keeps its groups in (one per bridge and driver).
    groups = [
        *Path("/sys/fs/cgroup").glob(f"swarm*/{agent_id}"),
        *Path("/sys/fs/cgroup").glob(f"*/swarm*/{agent_id}"),
    ]
    found += [f"cgroup {g}" for g in groups if g.is_dir()]
    return found


@BACKENDS
@pytest.mark.parametrize("driver", ["process", "netns"])
def test_kill_9_during_terminate_then_restart_gives_back_the_address_and_the_reservation_once(
    vmhost_process: Callable[..., VmHostProcess], quota: QuotaHarness, db: str, driver: str
) -> None:
    quota.stub.CreateTenant(qpb.CreateTenantRequest(tenant_id="acme", plan=qpb.PLAN_PRO))
    first = vmhost_process(QUOTA_TARGET=quota.target, DEFAULT_DRIVER=driver)
    doomed, kept = _spawn(first.stub), _spawn(first.stub)
    assert _vms_used(quota) == 2 and _addresses(db) == sorted([doomed.address, kept.address])
    doomed_pid, doomed_born = _guest(db, doomed.id)
    if driver == "netns":
        assert _devices(doomed.id)

    # TerminateAgent marked the agent STOPPING, and vmhost died before it
    # stopped the guest or gave anything back: the row as the crash leaves it.
    first.kill9()
    _write(
        db,
        sa.update(agents)
        .where(agents.c.id == doomed.id)
        .values(state="stopping", state_reason="terminated by request"),
    )
    if driver == "process":  # its guests live on in sessions of their own
        assert guest_alive(doomed_pid, None, doomed_born)

    second = vmhost_process(QUOTA_TARGET=quota.target, DEFAULT_DRIVER=driver)
    done = _get(second.stub, doomed.id)
    assert done.state == pb.AGENT_STATE_TERMINATED and done.state_reason == "terminated by request"
    assert not guest_alive(doomed_pid, None, doomed_born)
    assert _devices(doomed.id) == []
    assert _addresses(db) == [kept.address]  # the address is back in the pool
    assert _vms_used(quota) == 1 and _held_by(quota, doomed.id) == []  # the reservation, once
    assert _held_by(quota, kept.id) == [kept.reservation_id]
    assert _get(second.stub, kept.id).state == pb.AGENT_STATE_STARTING
    again = _spawn(second.stub)
    assert again.address == doomed.address  # the freed address is used once more
    assert _vms_used(quota) == 2

    # Another crash and restart reconciles again: nothing is given back twice.
    second.kill9()
    third = vmhost_process(QUOTA_TARGET=quota.target, DEFAULT_DRIVER=driver)
    assert _vms_used(quota) == 2 and _addresses(db) == sorted([kept.address, again.address])
    listed = third.stub.ListAgents(pb.ListAgentsRequest(tenant_id="acme")).agents
    assert {a.id for a in listed} == {kept.id, again.id}


@BACKENDS
def test_vmhost_restarted_never_signals_a_process_that_took_a_guests_pid(
    vmhost_process: Callable[..., VmHostProcess], db: str
) -> None:
    first = vmhost_process(DEFAULT_DRIVER="process")
    agent, legacy = _spawn(first.stub), _spawn(first.stub)
    first.kill9()
    for a in (agent, legacy):
        os.killpg(_guest(db, a.id)[0], signal.SIGKILL)  # the guests exit while vmhost is down ...
    stranger, old_stranger = _sleeper(), _sleeper()  # ... and their pids go to other processes
    _reaped(old_stranger)
    try:
        # Simulated pid reuse: each handle's pid now names a stranger. One
        # handle keeps the dead guest's start time; the other has none, as a
        # vmhost from before start times recorded it.
        _point_handle(db, agent.id, stranger.pid, _guest(db, agent.id)[1])
        _point_handle(db, legacy.id, old_stranger.pid, None)
        second = vmhost_process(DEFAULT_DRIVER="process", MONITOR_INTERVAL_SECONDS="0.2")
        # The attack, through the handle without a start time: a stranger is killed.
        second.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=legacy.id))
        assert old_stranger.wait(timeout=20) == -signal.SIGTERM
        # With one, the monitor finds the guest gone and heals the agent
        # (terminate and replace) without signalling the stranger.
        healed = eventually(
            lambda: (a := _get(second.stub, agent.id)).state == pb.AGENT_STATE_TERMINATED and a,
            timeout=30,
            what="the agent healed",
        )
        assert isinstance(healed, pb.Agent) and healed.state_reason == "guest process exited"
        second.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agent.id))
        assert stranger.poll() is None  # never signalled
    finally:
        for p in (stranger, old_stranger):
            p.kill()
            p.wait()


def _point_handle(db: str, agent_id: str, pid: int, start_time: int | None) -> None:
    handle = json.loads(_row(db, agent_id)["handle"])
    raw = json.dumps({**handle, "pid": pid, "pid_start_time": start_time})
    _write(db, sa.update(agents).where(agents.c.id == agent_id).values(handle=raw))


# -- in-process restarts ------------------------------------------------------------------------


@BACKENDS
def test_a_crash_between_reserve_and_record_releases_the_reservation(
    make_vmhost: Callable[..., VmHostHarness], quota: QuotaHarness
) -> None:
    quota.stub.CreateTenant(qpb.CreateTenantRequest(tenant_id="acme", plan=qpb.PLAN_PRO))
    crashed = _process_host(make_vmhost, quota_target=quota.target)
    # What spawn did before the crash, step by step: the agent row (with its
    # address and request id), then quota's reservation, whose answer never
    # got written.
    request = SpawnRequest("acme", "default", AgentRole.CODER, DriverName.PROCESS, "spawn-1")
    orphan, created = crashed.app.host.agents.create(str(uuid.uuid4()), request, DriverName.PROCESS, None)
    assert created
    with QuotaClient(quota.target) as client:
        client.reserve_vm("acme", owner=reservation_owner(orphan.id), request_id=f"spawn:{orphan.id}")
    assert _vms_used(quota) == 1

    restarted = _process_host(make_vmhost, quota_target=quota.target)
    assert f"{orphan.id}: spawn abandoned" in restarted.app.reconciled
    ended = _get(restarted.stub, orphan.id)
    assert ended.state == pb.AGENT_STATE_TERMINATED and ended.state_reason == ABANDONED
    assert _vms_used(quota) == 0 and _held_by(quota, orphan.id) == []
    assert orphan.address not in _addresses(restarted.settings.database_url)
    # The request id is free: the client's retry spawns anew, reserving once.
    retry = _spawn(restarted.stub, request_id="spawn-1")
    assert retry.id != orphan.id and retry.reservation_id
    restarted.app.monitor.run_once()
    assert _vms_used(quota) == 1


@BACKENDS
def test_a_release_whose_answer_was_lost_is_retried_and_counted_once(
    make_vmhost: Callable[..., VmHostHarness], quota: QuotaHarness
) -> None:
    quota.stub.CreateTenant(qpb.CreateTenantRequest(tenant_id="acme", plan=qpb.PLAN_PRO))
    with lossy_proxy(quota.target) as proxy:
        host = _process_host(make_vmhost, quota_target=proxy.target)
        gone, kept = _spawn(host.stub), _spawn(host.stub)
        proxy.lose_answers(RELEASE, times=100)  # quota releases; vmhost never hears so
        done = host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=gone.id)).agent
        assert done.state == pb.AGENT_STATE_TERMINATED
        assert host.app.host.agents.get_any(gone.id).reservation_settled_at is None
        assert _vms_used(quota) == 1
        proxy.to_lose.clear()
        asked = proxy.forwarded[RELEASE]

        host.app.monitor.run_once()
        assert host.app.host.agents.get_any(gone.id).reservation_settled_at is not None
        assert proxy.forwarded[RELEASE] == asked + 1
        host.app.monitor.run_once()
        assert proxy.forwarded[RELEASE] == asked + 1  # settled: not asked again
        assert _vms_used(quota) == 1 and _held_by(quota, kept.id) == [kept.reservation_id]


@BACKENDS
def test_the_monitor_finishes_an_agent_stuck_stopping_once_it_is_old_enough(
    make_vmhost: Callable[..., VmHostHarness], quota: QuotaHarness
) -> None:
    quota.stub.CreateTenant(qpb.CreateTenantRequest(tenant_id="acme", plan=qpb.PLAN_PRO))
    clock = ManualClock()
    host = _process_host(make_vmhost, clock, quota_target=quota.target)
    stuck, kept = _spawn(host.stub), _spawn(host.stub)
    handle = host.app.host.agents.get_any(stuck.id).handle
    assert handle is not None and handle.pid and handle.pid_start_time
    host.app.host.agents.stopping(stuck.id, "terminated by request")  # and then nothing more

    host.app.monitor.run_once()  # a terminate may still be on its way
    assert _get(host.stub, stuck.id).state == pb.AGENT_STATE_STOPPING
    clock.advance(STUCK_AFTER + timedelta(seconds=1))
    host.app.monitor.run_once()
    assert _get(host.stub, stuck.id).state == pb.AGENT_STATE_TERMINATED
    assert not guest_alive(handle.pid, None, handle.pid_start_time)
    assert _vms_used(quota) == 1 and _held_by(quota, stuck.id) == []
    host.app.monitor.run_once()
    assert _vms_used(quota) == 1 and _get(host.stub, kept.id).state != pb.AGENT_STATE_TERMINATED
