"""gVisor guests restored ahead of demand, so a spawn costs no restore.

A `runsc restore` takes about half a second on a two-core host, more inside
the guest's CPU limit, and the guest's first heartbeat comes after it. So
the gvisor driver keeps `size` guests restored from its snapshot and
waiting for their assignment (swarmagent.restorable), each one already
everything a spawn would make: its agent id, its address (held in the
addresses table under that id before the agent exists, see
stores.addresses.HeldAddresses), its network namespace on the bridge with
the filter's pins, its cgroups and its work directory. A spawn takes one
(VmHost.spawn names the agent after it), vmhost writes the assignment, and
the guest heartbeats. The restore's own span is recorded with the times it
really took, in the spawn's trace.

A ready guest holds no secret (its assignment is what carries the agent's
token). One whose spawn did not go ahead goes back to the pool, or is
removed when the spawn failed; a crash leaves sandboxes and held addresses
without an agent, which the driver's reconcile and
HeldAddresses.release_unowned remove on the next start.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from opentelemetry import trace
from pyroute2.netlink.exceptions import NetlinkError

from swarm_vmhost import network, sandbox
from swarm_vmhost.cgroups import Placement
from swarm_vmhost.domain import DriverName, GuestHandle, GuestLimit, GuestSpec
from swarm_vmhost.drivers.base import is_process, process_start_time
from swarm_vmhost.drivers.runsc import (
    PLATFORM,
    RunscBundles,
    RunscError,
    Template,
    _assign,
    _guest_env,
    _prepare_home,
    _restored_env,
)
from swarmcommon.errors import SwarmError, Unavailable

log = logging.getLogger(__name__)
tracer = trace.get_tracer("swarm_vmhost.drivers.gvisor")

RETRY_SECONDS = 2.0  # after a failed restore, before the next try
# Restores of one snapshot failing in a row before it is given up (guests
# then start cold): one failure may be the host's, not the snapshot's.
FAILURES_TO_DROP = 2


class AddressHolder(Protocol):
    def hold(self, agent_id: str) -> str: ...

    def release(self, agent_ids: Sequence[str]) -> None: ...


@dataclass
class ReadyGuest:
    agent_id: str
    pid: int  # the sandbox's process, and when it started (drivers.base.is_process)
    pid_start_time: int
    log: Path  # the sandbox's output so far (moved to the agent's directory when taken)
    mounts: list[dict[str, Any]]  # its own mounts (the CA certificate's)
    start_ns: int  # the restore, on the host's clock
    end_ns: int
    unenforced: list[GuestLimit] = field(default_factory=list)

    @property
    def restore_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class RestoredAhead:
    """The pool. `restore(agent_id, address, template)` makes one guest
    (raising, with nothing left behind, when it cannot); `remove(agent_id)`
    removes a guest's sandbox, cgroups, directories and network;
    `drop_template(template)` gives up a snapshot that no longer restores."""

    def __init__(
        self,
        size: int,
        addresses: AddressHolder,
        template: Callable[[], Template | None],
        restore: Callable[[str, str, Template], ReadyGuest],
        remove: Callable[[str], None],
        drop_template: Callable[[Template], None],
    ) -> None:
        self.size = size
        self.addresses = addresses
        self._template = template
        self._restore = restore
        self._remove = remove
        self._drop_template = drop_template
        self._lock = threading.Lock()
        self._ready: deque[ReadyGuest] = deque()
        self._taken: dict[str, ReadyGuest] = {}
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self._filler: threading.Thread | None = None

    def start(self) -> None:
        if self.size > 0 and self._filler is None:
            self._filler = threading.Thread(target=self._fill, name="gvisor-ahead", daemon=True)
            self._filler.start()

    def _fill(self) -> None:
        failures = 0
        while True:
            with self._lock:
                while not self._closed and (len(self._ready) >= self.size or self._template() is None):
                    self._changed.wait(timeout=0.5)
                if self._closed:
                    return
            template = self._template()
            if template is None:
                continue
            try:
                guest = self._make(template)
            except (SwarmError, OSError, NetlinkError, RunscError, subprocess.SubprocessError) as exc:
                log.warning("could not restore a gVisor guest ahead: %s", exc)
                failures += 1
                if failures >= FAILURES_TO_DROP:
                    self._drop_template(template)
                    failures = 0
                with self._lock:
                    self._changed.wait(timeout=RETRY_SECONDS)
                continue
            failures = 0
            with self._lock:
                if not self._closed:
                    self._ready.append(guest)
                    self._changed.notify_all()
                    continue
            self._drop(guest.agent_id)

    def _make(self, template: Template) -> ReadyGuest:
        agent_id = str(uuid.uuid4())
        address = self.addresses.hold(agent_id)
        try:
            return self._restore(agent_id, address, template)
        except BaseException:
            self._drop(agent_id)
            raise

    def _drop(self, agent_id: str) -> None:
        try:
            self._remove(agent_id)
        finally:
            self.addresses.release([agent_id])

    # -- spawns ---------------------------------------------------------------------------------------

    def take(self) -> str | None:
        with self._lock:
            while self._ready:
                guest = self._ready.popleft()
                self._changed.notify_all()  # one to make
                if is_process(guest.pid, guest.pid_start_time):  # else it died waiting
                    self._taken[guest.agent_id] = guest
                    return guest.agent_id
                threading.Thread(target=self._drop, args=(guest.agent_id,), daemon=True).start()
            return None

    def claim(self, agent_id: str) -> ReadyGuest | None:
        """The guest set aside as `agent_id`, now the driver's to start."""
        with self._lock:
            return self._taken.pop(agent_id, None)

    def give_back(self, agent_id: str) -> None:
        with self._lock:
            guest = self._taken.pop(agent_id, None)
            if guest is not None:
                self._ready.appendleft(guest)
                self._changed.notify_all()

    def discard(self, agent_id: str) -> None:
        with self._lock:
            guest = self._taken.pop(agent_id, None)
        if guest is not None:
            self._drop(agent_id)

    def ready_ids(self) -> list[str]:
        with self._lock:
            return [g.agent_id for g in self._ready]

    def wait_ready(self, timeout: float) -> bool:
        """Whether a guest is ready within `timeout` (benchmarks, tests)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._ready and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(timeout=min(left, 0.5))
            return bool(self._ready)

    def close(self) -> None:
        """Stop restoring; remove every guest not taken."""
        with self._lock:
            self._closed = True
            self._changed.notify_all()
            left = [*self._ready, *self._taken.values()]
            self._ready.clear()
            self._taken.clear()
        if self._filler is not None:
            self._filler.join(timeout=60)
        for guest in left:
            self._drop(guest.agent_id)


def _log(spec: GuestSpec) -> Path:
    return Path(spec.workdir) / "guest.log"


class ReadyGuests(RunscBundles):
    """The gvisor driver's sandboxes by name, and its guests restored ahead
    (a base of GvisorDriver; drivers.base.ReadiesAhead)."""

    name: DriverName
    allow_unlimited: bool
    ca_file: str
    ahead: RestoredAhead | None

    # -- ReadiesAhead ---------------------------------------------------------------------------------

    def take_ready(self) -> str | None:
        return self.ahead.take() if self.ahead is not None else None

    def give_back_ready(self, agent_id: str) -> None:
        if self.ahead is not None:
            self.ahead.give_back(agent_id)

    def discard_ready(self, agent_id: str) -> None:
        if self.ahead is not None:
            self.ahead.discard(agent_id)

    # -- a guest restored ahead -----------------------------------------------------------------------

    def _restore_ahead(self, agent_id: str, address: str, template: Template) -> ReadyGuest:
        """What a spawn of the standard guest would make, `template` restored
        in it; waiting for its assignment."""
        placement = self.cgroups.place(agent_id, self.limits, self.allow_unlimited)
        try:
            ns, _ = network.attach(agent_id, self.bridge, address)
            home = self._dir("homes", agent_id)
            _prepare_home(home)
            # Only what every guest has (the CA): a guest with more starts as spawns used to.
            mounts = self._guest_mounts({sandbox.CA_FILE_ENV: self.ca_file} if self.ca_file else {})
            bundle = self._dir("bundles", agent_id)
            bundle.mkdir(mode=0o700, exist_ok=True)
            self._write_bundle(bundle, template.for_guest(home, ns, mounts))
            start_ns = time.time_ns()
            args = ("restore", f"--image-path={template.image}", "--bundle", str(bundle))
            self._start_container(placement, agent_id, bundle / "guest.log", *args)
            end_ns = time.time_ns()
            pid = int((bundle / "pid").read_text())
            started = process_start_time(pid)
            if started is None:
                raise Unavailable("the restored gVisor sandbox exited at once")
        except BaseException:
            self._remove(agent_id)
            raise
        unenforced = list(placement.unenforced)
        return ReadyGuest(agent_id, pid, started, bundle / "guest.log", mounts, start_ns, end_ns, unenforced)

    def _start_ready(self, spec: GuestSpec, ready: ReadyGuest) -> GuestHandle | None:
        """The guest restored ahead as `spec`'s: its assignment written. None
        (the guest removed, its address kept) when `spec` needs mounts it
        lacks: the caller starts the guest as if none had been ready."""
        try:
            if self._guest_mounts(spec.env) != ready.mounts:
                self._remove(spec.agent_id)
                return None
            os.makedirs(spec.workdir, exist_ok=True)
            os.replace(ready.log, _log(spec))
            attributes: dict[str, str | bool] = {
                "swarm.agent_id": spec.agent_id,
                "swarm.tenant_id": spec.tenant_id,
                "vm.driver": str(self.name),
                "vm.restored_ahead": True,
            }
            # The restore as it happened, before this spawn asked for it.
            span = tracer.start_span("vm.restore", start_time=ready.start_ns, attributes=attributes)
            span.end(ready.end_ns)
            env = _restored_env(_guest_env(spec), ready.start_ns, ready.end_ns)
            _assign(self.root / "homes" / spec.agent_id, env)
        except BaseException:
            self._remove(spec.agent_id)
            raise
        data = {"restored": "1", "restored_ahead": "1", "restore_ms": f"{ready.restore_ms:.1f}"}
        return self._handle(spec, ready.pid, data, ready.unenforced)

    def _handle(
        self, spec: GuestSpec, pid: int, data: dict[str, str], unenforced: Sequence[GuestLimit]
    ) -> GuestHandle:
        """A running gVisor guest's handle."""
        return GuestHandle(
            spec.agent_id,
            self.name,
            pid=pid,
            devices=[network.host_veth(spec.agent_id)],
            netns=network.netns_name(self.bridge, spec.agent_id),
            data={"sandbox": "gvisor", "platform": PLATFORM, "network": "netstack", **data},
            unenforced_limits=list(unenforced),
        )

    # -- sandboxes by name ----------------------------------------------------------------------------

    def _start_container(self, placement: Placement, name: str, log_path: Path, *args: str) -> None:
        """`runsc run|restore ... -detach <name>` in the guest's cgroups, its
        output to `log_path`."""
        pid_file = self._dir("bundles", name) / "pid"
        try:
            self._runsc_in(placement.dirs, log_path, *args, "-detach", "--pid-file", str(pid_file), name)
        except (RunscError, subprocess.SubprocessError) as exc:
            raise Unavailable(f"could not start the gVisor sandbox: {exc}") from exc

    def _remove(self, agent_id: str) -> None:
        """The guest's sandbox, cgroups, directories and network. Idempotent."""
        self._remove_container(agent_id)
        network.detach(self.bridge, agent_id)

    def _remove_container(self, name: str) -> None:
        """A sandbox by name, whatever is left in its cgroups, its directories."""
        self._runsc_quiet("delete", "-force", name)
        self.cgroups.kill(name)
        self.cgroups.remove(name)
        for kind in ("homes", "bundles"):
            shutil.rmtree(self.root / kind / name, ignore_errors=True)
