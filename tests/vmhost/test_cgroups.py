"""Defect 15: guests never run without limits silently. Where the cgroup
controllers cannot be enabled, the netns driver refuses the guest
(FAILED_PRECONDITION naming the controllers) — or, when the host allows
unlimited guests, runs it and says which limits it runs without.

The trees here are a temporary directory standing in for the cgroup
filesystem, and a real cgroup2 group whose parent enables no controllers
(created for the test and removed after): the host's own cgroup
configuration is never changed."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from pyroute2 import netns

from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_vmhost.cgroups import CgroupTree, Limits
from swarm_vmhost.domain import ALL_LIMITS, GuestLimit
from swarm_vmhost.tables import agents
from tests.support.harness import BACKENDS
from tests.support.status import error_info, raises_status
from tests.vmhost.harness import VmHostHarness

ALL = [pb.GUEST_LIMIT_MEMORY, pb.GUEST_LIMIT_CPU, pb.GUEST_LIMIT_PIDS]


def _fake_v2(root: Path) -> Path:
    """A directory shaped like a cgroup2 mount that offers memory, cpu and pids,
    where, as with controllers that cannot be enabled, no group ever gets the
    controllers' limit files."""
    root.mkdir()
    (root / "cgroup.controllers").write_text("memory cpu pids\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


def _cgroup2_mount() -> Path | None:
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    return None


@pytest.fixture
def bare_cgroup2() -> Iterator[Path]:
    """A real cgroup2 group that enables no controllers for its children (its
    subtree_control stays empty), removed afterwards with all it holds."""
    mount = _cgroup2_mount()
    assert mount is not None, "the kernel's cgroup2 hierarchy is not mounted"
    parent = mount / f"swarm-test-{uuid.uuid4().hex[:8]}"
    parent.mkdir()
    try:
        yield parent
    finally:
        for d in sorted(
            (p for p in parent.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            d.rmdir()
        parent.rmdir()


def test_a_tree_whose_controllers_cannot_be_enabled_enforces_no_limit(tmp_path: Path) -> None:
    fake = CgroupTree(_fake_v2(tmp_path / "cgroup"))
    placement = fake.create("a1", Limits())
    assert placement.unenforced == ALL_LIMITS
    assert fake.unenforceable(Limits()) == ALL_LIMITS
    assert CgroupTree(tmp_path / "nothing-mounted").create("a1", Limits()).unenforced == ALL_LIMITS
    fake.remove("a1")
    assert fake.known() == set()  # the trial group is gone too


def test_a_real_cgroup_without_controllers_enforces_no_limit(bare_cgroup2: Path) -> None:
    tree = CgroupTree(bare_cgroup2)
    assert tree.version() == 2
    placement = tree.create("a1", Limits())
    assert placement.unenforced == ALL_LIMITS
    assert placement.dirs == [bare_cgroup2 / "swarm" / "a1"] and placement.dirs[0].is_dir()
    tree.remove("a1")
    assert not placement.dirs[0].exists()


def _written_agents(host: VmHostHarness) -> int:
    with host.app.db.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(agents)).scalar_one())


@BACKENDS
def test_netns_refuses_a_guest_whose_limits_cannot_be_enforced(
    make_vmhost: Callable[..., VmHostHarness], tmp_path: Path
) -> None:
    host = make_vmhost(guest_command="sleep 600", cgroup_root=str(_fake_v2(tmp_path / "cgroup")))
    drivers = {d.driver: d for d in host.stub.ListDrivers(pb.ListDriversRequest()).drivers}
    netns_info = drivers[pb.DRIVER_NETNS]
    assert not netns_info.available and not netns_info.is_default
    assert "memory, cpu, pids" in netns_info.reason and list(netns_info.unenforced_limits) == ALL
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "memory", "ALLOW_UNLIMITED_GUESTS") as caught:
        host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme", driver=pb.DRIVER_NETNS))
    assert error_info(caught[0]).reason == "DRIVER_UNAVAILABLE"
    assert _written_agents(host) == 0  # nothing written, no namespace made
    assert not [n for n in netns.listnetns() if n.startswith(f"{host.bridge.name}-")]


@BACKENDS
def test_an_unlimited_guest_runs_only_when_allowed_and_says_so(
    make_vmhost: Callable[..., VmHostHarness], tmp_path: Path
) -> None:
    host = make_vmhost(
        guest_command="sleep 600",
        cgroup_root=str(_fake_v2(tmp_path / "cgroup")),
        allow_unlimited_guests=True,
        default_driver="netns",
    )
    netns_info = next(
        d for d in host.stub.ListDrivers(pb.ListDriversRequest()).drivers if d.driver == pb.DRIVER_NETNS
    )
    assert netns_info.available and list(netns_info.unenforced_limits) == ALL
    agent = host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme")).agent
    assert agent.driver == pb.DRIVER_NETNS and agent.state == pb.AGENT_STATE_STARTING
    assert list(agent.unenforced_limits) == ALL
    listed = host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=agent.id)).agent
    assert list(listed.unenforced_limits) == ALL


@BACKENDS
def test_guests_report_the_limits_they_run_under(make_vmhost: Callable[..., VmHostHarness]) -> None:
    """On this host's real cgroups every netns limit holds; a process guest has none."""
    host = make_vmhost(guest_command="sleep 600", default_driver="netns")
    confined = host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme")).agent
    assert confined.driver == pb.DRIVER_NETNS and list(confined.unenforced_limits) == []
    loose = host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme", driver=pb.DRIVER_PROCESS)).agent
    assert list(loose.unenforced_limits) == ALL
    handle = host.app.host.agents.get_any(confined.id).handle
    assert handle is not None and handle.unenforced_limits == []
    assert GuestLimit.MEMORY in host.app.host.agents.get_any(loose.id).unenforced_limits
