"""`netns`: each guest runs in its own network namespace on the bridge
(veth pair, isolated bridge port) under its own cgroup limits. The default
where the host grants network-admin rights.

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
from collections.abc import Sequence

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from swarm_vmhost import cgroups, network
from swarm_vmhost.drivers.base import GuestHandle, GuestSpec, guest_alive, stop_guest
from swarm_vmhost.zygote import Zygote
from swarmcommon.errors import FailedPrecondition, Unavailable

logger = logging.getLogger(__name__)


def is_standard_guest(command: Sequence[str]) -> bool:
    """The guest program the zygote has warm (`python -m swarmagent.guest`)."""
    return list(command[-2:]) == ["-m", "swarmagent.guest"]


class NetnsDriver:
    name = "netns"
    isolated = True
    guest_heartbeats = True

    def __init__(
        self, bridge: network.Bridge, limits: cgroups.Limits | None = None, zygote: Zygote | None = None
    ) -> None:
        self.bridge = bridge
        self.limits = limits or cgroups.Limits()
        # Forks the standard guest program warm; other programs are exec'd.
        self.zygote = zygote
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def probe(self) -> str | None:
        if os.geteuid() != 0:
            return "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create namespaces and devices"
        try:
            with IPRoute() as ip:
                ip.get_links()
        except (OSError, NetlinkError) as exc:
            return f"netlink unavailable: {exc}"
        return None

    def start(self, spec: GuestSpec) -> GuestHandle:
        if self.probe() is not None:
            raise FailedPrecondition(f"netns driver unavailable: {self.probe()}")
        try:
            ns, veth = network.attach(spec.agent_id, self.bridge, spec.address)
        except (OSError, NetlinkError, network.NetworkError) as exc:
            raise Unavailable(f"could not set up the guest network: {exc}") from exc
        groups = cgroups.create(spec.agent_id, self.limits)
        os.makedirs(spec.workdir, exist_ok=True)
        if self.zygote is not None and self.zygote.alive() and is_standard_guest(spec.command):
            try:
                pid = self.zygote.spawn(
                    f"/run/netns/{ns}",
                    [str(cgroups.procs_file(d)) for d in groups],
                    spec.env,
                    spec.workdir,
                    os.path.join(spec.workdir, "guest.log"),
                )
                return GuestHandle(
                    spec.agent_id, self.name, pid=pid, devices=[veth], netns=ns, data={"zygote": "1"}
                )
            except (OSError, RuntimeError) as exc:  # a cold start still works
                logger.warning("zygote spawn failed; starting the guest cold", extra={"error": str(exc)})
        joins = " && ".join(f"echo $$ > {shlex.quote(str(cgroups.procs_file(d)))}" for d in groups)
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
            cgroups.remove(spec.agent_id)
            raise Unavailable(f"could not start the guest program: {exc}") from exc
        finally:
            log.close()
        self._children[spec.agent_id] = proc
        return GuestHandle(spec.agent_id, self.name, pid=proc.pid, devices=[veth], netns=ns)

    def stop(self, handle: GuestHandle) -> None:
        proc = self._children.pop(handle.agent_id, None)
        stop_guest(handle.pid, proc)
        network.detach(self.bridge, handle.agent_id)
        cgroups.remove(handle.agent_id)

    def alive(self, handle: GuestHandle) -> bool:
        return guest_alive(handle.pid, self._children.get(handle.agent_id))

    def repair(self, handle: GuestHandle, address: str) -> None:
        """Give a running guest its link to the bridge back (a new veth pair)."""
        network.plug(handle.agent_id, self.bridge, address)

    def reconcile(self, known_agent_ids: set[str]) -> list[str]:
        known = {network.short_id(a) for a in known_agent_ids}
        removed = []
        for short in sorted(network.leftovers(self.bridge) - known):
            network.remove_by_short_id(self.bridge, short)
            removed.append(short)
        for agent_id in cgroups.known() - known_agent_ids:
            cgroups.remove(agent_id)
        return removed
