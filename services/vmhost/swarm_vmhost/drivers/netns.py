"""`netns`: each guest runs in its own network namespace on the bridge
(veth pair, isolated bridge port) under its own cgroup limits. The default
where the host grants network-admin rights and the cgroup controllers for
the limits (memory, cpu, pids) are there: without them the driver is
unavailable and says which are missing, unless the host is set to allow
unlimited guests, whose agents then report the limits they run without.

The guest program starts confined: a tiny shell joins the agent's cgroups
(writing its own pid) and then execs `nsenter --net=<namespace>` into the
guest program. No Python runs between fork and exec (unsafe in a threaded
server), and unlike `ip netns exec` nothing is remounted.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from pyroute2.netlink.exceptions import NetlinkError

from swarm_vmhost import network
from swarm_vmhost.cgroups import CgroupTree, Limits, Placement
from swarm_vmhost.domain import DriverName, GuestHandle, GuestLimit, GuestSpec
from swarm_vmhost.drivers.base import guest_alive, stop_guest
from swarm_vmhost.zygote import Zygote
from swarmcommon.errors import FailedPrecondition, Unavailable

logger = logging.getLogger(__name__)


def is_standard_guest(command: Sequence[str]) -> bool:
    """The guest program the zygote has warm (`python -m swarmagent.guest`)."""
    return list(command[-2:]) == ["-m", "swarmagent.guest"]


def unenforced_message(missing: Sequence[GuestLimit], top: Path) -> str:
    names = ", ".join(missing)
    return (
        f"cgroup limits cannot be enforced for {names}: the {names} controller(s) cannot be enabled "
        f"for groups under {top}; set SWARM_VMHOST_ALLOW_UNLIMITED_GUESTS=true to run guests without them"
    )


class NetnsDriver:
    name = DriverName.NETNS
    isolated = True
    guest_heartbeats = True

    def __init__(
        self,
        bridge: network.Bridge,
        limits: Limits | None = None,
        zygote: Zygote | None = None,
        cgroups: CgroupTree | None = None,
        allow_unlimited: bool = False,
    ) -> None:
        self.bridge = bridge
        self.limits = limits or Limits()
        # Forks the standard guest program warm; other programs are exec'd.
        self.zygote = zygote
        self.cgroups = cgroups or CgroupTree()
        # Run guests whose limits cannot be enforced (and say so) instead of refusing them.
        self.allow_unlimited = allow_unlimited
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._unenforceable: tuple[GuestLimit, ...] | None = None
        self._trial_lock = threading.Lock()

    def unenforced_limits(self) -> tuple[GuestLimit, ...]:
        """What the host's cgroup tree cannot limit, found once with a trial group."""
        with self._trial_lock:
            if self._unenforceable is None:
                self._unenforceable = self.cgroups.unenforceable(self.limits)
            return self._unenforceable

    def probe(self) -> str | None:
        why = network.probe()
        if why is not None:
            return why
        missing = self.unenforced_limits()
        if missing and not self.allow_unlimited:
            return unenforced_message(missing, self.cgroups.top)
        return None

    def _place(self, spec: GuestSpec) -> Placement:
        """The guest's cgroups; refused (and nothing left behind) when a limit did not hold."""
        try:
            placement = self.cgroups.create(spec.agent_id, self.limits)
        except OSError as exc:
            self.cgroups.remove(spec.agent_id)
            raise Unavailable(f"could not create the guest's cgroups: {exc}") from exc
        if placement.unenforced and not self.allow_unlimited:
            self.cgroups.remove(spec.agent_id)
            raise FailedPrecondition(
                unenforced_message(placement.unenforced, self.cgroups.top),
                reason="GUEST_LIMITS_UNENFORCED",
                limits=",".join(placement.unenforced),
            )
        return placement

    def start(self, spec: GuestSpec) -> GuestHandle:
        why = self.probe()
        if why is not None:
            raise FailedPrecondition(f"netns driver unavailable: {why}", reason="DRIVER_UNAVAILABLE")
        placement = self._place(spec)
        try:
            ns, veth = network.attach(spec.agent_id, self.bridge, spec.address)
        except (OSError, NetlinkError, network.NetworkError) as exc:
            self.cgroups.remove(spec.agent_id)
            raise Unavailable(f"could not set up the guest network: {exc}") from exc
        groups = placement.dirs
        unenforced = list(placement.unenforced)
        os.makedirs(spec.workdir, exist_ok=True)
        if self.zygote is not None and self.zygote.alive() and is_standard_guest(spec.command):
            try:
                pid = self.zygote.spawn(
                    f"/run/netns/{ns}",
                    [str(self.cgroups.procs_file(d)) for d in groups],
                    spec.env,
                    spec.workdir,
                    os.path.join(spec.workdir, "guest.log"),
                )
                return GuestHandle(
                    spec.agent_id,
                    self.name,
                    pid=pid,
                    devices=[veth],
                    netns=ns,
                    data={"zygote": "1"},
                    unenforced_limits=unenforced,
                )
            except (OSError, RuntimeError) as exc:  # a cold start still works
                logger.warning("zygote spawn failed; starting the guest cold", extra={"error": str(exc)})
        joins = " && ".join(f"echo $$ > {shlex.quote(str(self.cgroups.procs_file(d)))}" for d in groups)
        script = f'{joins + " && " if joins else ""}exec nsenter --net=/run/netns/{ns} -- "$@"'
        log = open(os.path.join(spec.workdir, "guest.log"), "ab")  # noqa: SIM115 - the child keeps it
        try:
            proc = subprocess.Popen(
                ["sh", "-c", script, "guest", *spec.command],
                env=dict(spec.env),
                cwd=spec.workdir,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        except OSError as exc:
            network.detach(self.bridge, spec.agent_id)
            self.cgroups.remove(spec.agent_id)
            raise Unavailable(f"could not start the guest program: {exc}") from exc
        finally:
            log.close()
        self._children[spec.agent_id] = proc
        return GuestHandle(
            spec.agent_id, self.name, pid=proc.pid, devices=[veth], netns=ns, unenforced_limits=unenforced
        )

    def stop(self, handle: GuestHandle) -> None:
        proc = self._children.pop(handle.agent_id, None)
        stop_guest(handle.pid, proc)
        network.detach(self.bridge, handle.agent_id)
        self.cgroups.remove(handle.agent_id)

    def alive(self, handle: GuestHandle) -> bool:
        return guest_alive(handle.pid, self._children.get(handle.agent_id))

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
        for agent_id in self.cgroups.known() - known_agent_ids:
            self.cgroups.remove(agent_id)
        return removed
