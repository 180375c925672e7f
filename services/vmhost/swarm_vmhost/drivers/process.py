"""`process`: the guest is a plain child process of vmhost, with no isolation
at all (no namespace, no limits). For development and machines without
network-admin rights; ListDrivers says so. Outside insecure dev mode it runs
only when an operator chose it (SWARM_VMHOST_DEFAULT_DRIVER=process): a host
whose sandboxes cannot run must not quietly fall back to none."""

from __future__ import annotations

import os
import subprocess

from swarm_vmhost.domain import ALL_LIMITS, DriverName, GuestHandle, GuestLimit, GuestSpec
from swarm_vmhost.drivers.base import guest_alive, stop_guest
from swarmcommon.errors import Unavailable


class ProcessDriver:
    name = DriverName.PROCESS
    isolated = False
    guest_heartbeats = True

    def __init__(self, allowed: bool = True) -> None:
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self.allowed = allowed

    def probe(self) -> str | None:
        if not self.allowed:
            return (
                "guests without isolation run only in insecure dev mode or when chosen "
                "(SWARM_VMHOST_DEFAULT_DRIVER=process)"
            )
        return None

    def unenforced_limits(self) -> tuple[GuestLimit, ...]:
        return ALL_LIMITS  # a plain child process: nothing is limited

    def start(self, spec: GuestSpec) -> GuestHandle:
        os.makedirs(spec.workdir, exist_ok=True)
        log = open(os.path.join(spec.workdir, "guest.log"), "ab")  # noqa: SIM115 - the child keeps it
        try:
            proc = subprocess.Popen(
                list(spec.command),
                env=dict(spec.env),
                cwd=spec.workdir,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        except OSError as exc:
            raise Unavailable(f"could not start the guest program: {exc}") from exc
        finally:
            log.close()
        self._children[spec.agent_id] = proc
        return GuestHandle(spec.agent_id, self.name, pid=proc.pid, unenforced_limits=list(ALL_LIMITS))

    def stop(self, handle: GuestHandle) -> None:
        proc = self._children.pop(handle.agent_id, None)
        stop_guest(handle.pid, proc)

    def alive(self, handle: GuestHandle) -> bool:
        return guest_alive(handle.pid, self._children.get(handle.agent_id))

    def reconcile(self, known_agent_ids: set[str]) -> list[str]:
        return []  # children die with their session; nothing on the host outlives them
