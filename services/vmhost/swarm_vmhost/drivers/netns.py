"""`netns`: each guest is a bubblewrap sandbox (swarm_vmhost.sandbox) in its
own network namespace on the bridge (veth pair, isolated bridge port), under
its own cgroup limits. The fallback where gVisor cannot run; it needs
network-admin rights, bubblewrap, and the cgroup controllers for the limits
(memory, cpu, pids): without them the driver is unavailable and says what is
missing, unless the host is set to allow unlimited guests, whose agents then
report the limits they run without.

The standard guest (`python -m swarmagent.guest`) is taken from a pool of
warm sandboxes (swarm_vmhost.warmpool): its processes move into the agent's
cgroup, its network namespace is named after the agent and plugged into the
bridge, and it is sent its environment. Any other program, or the standard
one when no warm sandbox is ready, starts cold: a tiny shell joins the
agent's cgroups (writing its own pid), then execs `nsenter --net=<namespace>`
into the sandbox. No Python runs between fork and exec (unsafe in a threaded
server), and unlike `ip netns exec` nothing is remounted.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from pyroute2.netlink.exceptions import NetlinkError

from swarm_vmhost import network, sandbox
from swarm_vmhost.cgroups import CgroupTree, Limits, Placement, unenforced_message
from swarm_vmhost.domain import DriverName, GuestHandle, GuestLimit, GuestSpec
from swarm_vmhost.drivers.base import guest_alive, process_start_time, stop_guest
from swarm_vmhost.warmpool import WarmPool, WarmSandbox, start_warm
from swarmcommon.errors import FailedPrecondition, Unavailable

logger = logging.getLogger(__name__)

# The cgroup warm sandboxes wait in (one guest's limits, shared while idle).
POOL_GROUP = "warm-pool"
WARM_COMMAND = (sys.executable, "-m", "swarmagent.warm")


def is_standard_guest(command: Sequence[str]) -> bool:
    """The guest program the pool keeps warm (`python -m swarmagent.guest`)."""
    return list(command[-2:]) == ["-m", "swarmagent.guest"]


class NetnsDriver:
    name = DriverName.NETNS
    isolated = True
    guest_heartbeats = True
    isolation = "namespaces"

    def __init__(
        self,
        bridge: network.Bridge,
        workroot: Path,
        limits: Limits | None = None,
        cgroups: CgroupTree | None = None,
        allow_unlimited: bool = False,
        warm: int = 0,
        hidden: Sequence[str] = (),
        ca_file: str = "",
    ) -> None:
        """`warm`: how many standard guests to keep started ahead of demand;
        `hidden`: host directories no guest may see even where a bound path
        holds them (databases, TLS keys, the workroot); `ca_file`: the CA
        certificate guests verify the services with."""
        self.bridge = bridge
        self.limits = limits or Limits()
        self.cgroups = cgroups or CgroupTree()
        # Run guests whose limits cannot be enforced (and say so) instead of refusing them.
        self.allow_unlimited = allow_unlimited
        self.workroot = workroot
        self.hidden = [str(Path(h).resolve()) for h in [*hidden, str(workroot)]]
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._unenforceable: tuple[GuestLimit, ...] | None = None
        self._lock = threading.Lock()
        self._homes: Path | None = None
        self._pool: WarmPool | None = None
        self._warm = warm
        self.ca_file = ca_file

    # -- what this host allows ----------------------------------------------------------------------

    def unenforced_limits(self) -> tuple[GuestLimit, ...]:
        """What the host's cgroup tree cannot limit, found once with a trial group."""
        with self._lock:
            if self._unenforceable is None:
                self._unenforceable = self.cgroups.unenforceable(self.limits)
            return self._unenforceable

    def probe(self) -> str | None:
        why = network.probe() or sandbox.probe()
        if why is not None:
            return why
        missing = self.unenforced_limits()
        if missing and not self.allow_unlimited:
            return unenforced_message(missing, self.cgroups.top)
        return None

    @property
    def homes(self) -> Path:
        """Where guests' work directories live (reachable by the guests' uid)."""
        with self._lock:
            if self._homes is None:
                self._homes = sandbox.home_root(self.workroot / "homes", self.bridge.name)
            return self._homes

    def start_pool(self) -> None:
        """Begin keeping warm sandboxes (once the host has reconciled leftovers)."""
        if self._warm > 0 and self._pool is None and self.probe() is None:
            self._pool = WarmPool(self._warm, self._make_warm)

    def _make_warm(self, slot: str) -> WarmSandbox:
        placement = self.cgroups.create(POOL_GROUP, self.limits)
        logs = self.workroot / "warm"
        logs.mkdir(parents=True, exist_ok=True)
        return start_warm(
            WARM_COMMAND,
            self.homes / slot,
            logs / f"{slot}.log",
            [str(self.cgroups.procs_file(d)) for d in placement.dirs],
            self.hidden,
            _base_env(),
            sandbox.publish_ca(self.ca_file, self.homes),
        )

    def wait_warm(self, timeout: float) -> bool:
        return self._pool is not None and self._pool.wait_full(timeout)

    # -- guests -------------------------------------------------------------------------------------

    def start(self, spec: GuestSpec) -> GuestHandle:
        why = self.probe()
        if why is not None:
            raise FailedPrecondition(f"netns driver unavailable: {why}", reason="DRIVER_UNAVAILABLE")
        placement = self.cgroups.place(spec.agent_id, self.limits, self.allow_unlimited)
        os.makedirs(spec.workdir, exist_ok=True)
        warm = self._pool.take() if self._pool is not None and self._warmable(spec) else None
        try:
            if warm is not None:
                return self._start_warm(spec, placement, warm)
            return self._start_cold(spec, placement)
        except BaseException:
            if warm is not None:
                warm.discard()
            network.detach(self.bridge, spec.agent_id)
            self.cgroups.remove(spec.agent_id)
            shutil.rmtree(self.homes / spec.agent_id, ignore_errors=True)
            raise

    @staticmethod
    def _warmable(spec: GuestSpec) -> bool:
        """A warm sandbox can become this guest: the standard program, and no
        tenant directory to bind (local repositories, development only)."""
        return is_standard_guest(spec.command) and not spec.env.get(sandbox.LOCAL_ROOT_ENV)

    def _handle(self, spec: GuestSpec, pid: int, placement: Placement, **data: str) -> GuestHandle:
        return GuestHandle(
            spec.agent_id,
            self.name,
            pid=pid,
            pid_start_time=process_start_time(pid),
            devices=[network.host_veth(spec.agent_id)],
            netns=network.netns_name(self.bridge, spec.agent_id),
            data={"sandbox": "bwrap", **data},
            unenforced_limits=list(placement.unenforced),
        )

    def _start_warm(self, spec: GuestSpec, placement: Placement, warm: WarmSandbox) -> GuestHandle:
        for pid in warm.processes():
            for d in placement.dirs:
                self.cgroups.procs_file(d).write_text(str(pid))
        try:
            network.adopt(spec.agent_id, self.bridge, spec.address, warm.child_pid)
        except (OSError, NetlinkError, network.NetworkError) as exc:
            raise Unavailable(f"could not set up the guest network: {exc}") from exc
        warm.home.rename(self.homes / spec.agent_id)
        warm.log.rename(Path(spec.workdir) / "guest.log")
        warm.assign(_guest_env(spec))
        self._children[spec.agent_id] = warm.proc
        return self._handle(spec, warm.pid, placement, warm="1")

    def _start_cold(self, spec: GuestSpec, placement: Placement) -> GuestHandle:
        try:
            ns, _ = network.attach(spec.agent_id, self.bridge, spec.address)
        except (OSError, NetlinkError, network.NetworkError) as exc:
            raise Unavailable(f"could not set up the guest network: {exc}") from exc
        home = self.homes / spec.agent_id
        sandbox.prepare_home(home)
        env = _guest_env(spec)
        try:
            run = sandbox.launch(
                spec.command,
                env,
                str(home),
                hidden=self.hidden,
                ca_file=sandbox.publish_ca(spec.env.get(sandbox.CA_FILE_ENV, ""), self.homes),
            )
        except sandbox.SandboxUnavailable as exc:
            raise FailedPrecondition(str(exc), reason="DRIVER_UNAVAILABLE") from exc
        joins = "".join(
            f"echo $$ > {shlex.quote(str(self.cgroups.procs_file(d)))} && " for d in placement.dirs
        )
        script = f'{joins}exec nsenter --net=/run/netns/{ns} -- "$@"'
        log = open(os.path.join(spec.workdir, "guest.log"), "ab")  # noqa: SIM115 - the child keeps it
        try:
            proc = subprocess.Popen(
                ["sh", "-c", script, "guest", *run.argv],
                env=env,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=run.fds,
                start_new_session=True,
            )
        except OSError as exc:
            raise Unavailable(f"could not start the guest program: {exc}") from exc
        finally:
            run.close()
            log.close()
        self._children[spec.agent_id] = proc
        return self._handle(spec, proc.pid, placement)

    def stop(self, handle: GuestHandle) -> None:
        """The sandbox first (bubblewrap takes its guest with it), then
        whatever of the guest's escaped its session, through its cgroup."""
        proc = self._children.pop(handle.agent_id, None)
        stop_guest(handle.pid, proc, start_time=handle.pid_start_time)
        self.cgroups.kill(handle.agent_id)
        network.detach(self.bridge, handle.agent_id)
        self.cgroups.remove(handle.agent_id)
        shutil.rmtree(self.homes / handle.agent_id, ignore_errors=True)

    def alive(self, handle: GuestHandle) -> bool:
        return guest_alive(handle.pid, self._children.get(handle.agent_id), start_time=handle.pid_start_time)

    def repair(self, handle: GuestHandle, address: str) -> None:
        """Give a running guest its link to the bridge back (a new veth pair)."""
        network.plug(handle.agent_id, self.bridge, address)

    def reconcile(self, known_agent_ids: set[str]) -> list[str]:
        if network.probe() is not None:
            return []
        known = {network.short_id(a) for a in known_agent_ids}
        removed = []
        for short in sorted(network.leftovers(self.bridge) - known):
            network.remove_by_short_id(self.bridge, short)
            removed.append(short)
        for agent_id in self.cgroups.known() - known_agent_ids - {POOL_GROUP}:
            self.cgroups.kill(agent_id)
            self.cgroups.remove(agent_id)
        pooled = self._pool is not None  # its warm sandboxes are not leftovers
        for home in self.homes.iterdir():
            if home.name not in known_agent_ids and not (pooled and home.name.startswith("warm-")):
                shutil.rmtree(home, ignore_errors=True)
        if not pooled:
            shutil.rmtree(self.workroot / "warm", ignore_errors=True)
        return removed

    def close(self) -> None:
        """Stop keeping warm sandboxes (those not taken are stopped)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self.cgroups.kill(POOL_GROUP)
        self.cgroups.remove(POOL_GROUP)


def _guest_env(spec: GuestSpec) -> dict[str, str]:
    """The guest's environment inside the sandbox: HOME is its work directory,
    the CA certificate where the sandbox has it."""
    env = {**spec.env, "HOME": sandbox.GUEST_HOME}
    if env.get(sandbox.CA_FILE_ENV):
        env[sandbox.CA_FILE_ENV] = sandbox.GUEST_CA_FILE
    return env


def _base_env() -> dict[str, str]:
    """What a warm sandbox starts with, before it has an agent: only what finds Python."""
    env = {"PATH": "/usr/bin:/bin"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env
