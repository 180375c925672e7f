"""`gvisor`: each guest is a gVisor sandbox (runsc), its system calls served
by gVisor's own kernel in user space, never by the host's.

The bundles and runsc's command lines are in swarm_vmhost.drivers.runsc.

Limits: runsc runs with `--ignore-cgroups` (it cannot manage cgroup v1
under `ip netns exec`), so a tiny shell joins the agent's cgroups first
and execs runsc: the sandbox and its gofer are born in them, memory and
pids included (swarm_vmhost.cgroups; refused or reported as unenforced
like the netns driver).

Starting Python and importing the agent runtime under gVisor's ptrace
platform (the one that works here) takes about ten seconds. So for the
standard guest, vmhost starts one sandbox per start of its own running
`swarmagent.restorable` (the runtime imported, waiting for its
assignment, holding nothing), checkpoints it (`runsc checkpoint`), and
restores a copy for every agent (`runsc restore`), in the agent's
namespace and cgroups, with its work directory in place of the
template's (and its own mounts after the template's). A restore takes
about half a second, so `ahead` copies are restored before any spawn asks
(drivers/gvisor_ahead.py): a spawn takes one, agent id and address
included, and only writes its assignment. The assignment (the guest's
environment) is a file vmhost writes into the work directory once the
copy runs, mode 0600 and owned by the guest; the guest deletes it once
read. Restores are timed (a `vm.restore` span on the spawn; the guest's
first ticket gets one too, as with qemu). Any other program, or a spawn
before the snapshot is ready, starts cold; a snapshot that fails to
restore is dropped and guests start cold. (`runsc state` is not asked
whether a sandbox runs: it signals the sandbox and calls it stopped when
a busy one is slow to answer. The sandbox's process says it.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from pyroute2 import netns as namespaces
from pyroute2.netlink.exceptions import NetlinkError

from swarm_vmhost import network, sandbox
from swarm_vmhost.cgroups import CgroupTree, Limits, Placement, unenforced_message
from swarm_vmhost.domain import DriverName, GuestHandle, GuestLimit, GuestSpec, Isolation
from swarm_vmhost.drivers.base import STOP_GRACE_SECONDS, guest_alive
from swarm_vmhost.drivers.gvisor_ahead import AddressHolder, ReadyGuests, RestoredAhead, _log
from swarm_vmhost.drivers.netns import is_standard_guest
from swarm_vmhost.drivers.runsc import (
    POLL_SECONDS,
    RUNSC,
    TEMPLATE_GROUP,
    TEMPLATE_NETNS,
    TEMPLATE_SECONDS,
    RunscError,
    Template,
    _assign,
    _guest_env,
    _ip,
    _prepare_home,
    _restored_env,
)
from swarmcommon.errors import FailedPrecondition, Unavailable

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class GvisorDriver(ReadyGuests):
    name = DriverName.GVISOR
    isolated = True
    guest_heartbeats = True
    isolation = Isolation.USER_KERNEL

    def __init__(
        self,
        bridge: network.Bridge,
        workroot: Path,
        limits: Limits | None = None,
        cgroups: CgroupTree | None = None,
        allow_unlimited: bool = False,
        snapshot: bool = False,
        hidden: Sequence[str] = (),
        ca_file: str = "",
        ahead: int = 0,
        addresses: AddressHolder | None = None,
    ) -> None:
        """`snapshot`: restore the standard guest from a checkpointed one
        instead of starting it cold; `hidden`: host directories no guest may
        see even where a bound path holds them; `ca_file`: the CA certificate
        guests verify the services with (bound read-only into every guest,
        the snapshot's included); `ahead`: how many standard guests to keep
        restored before any spawn asks (gvisor_ahead), their addresses held
        in `addresses`."""
        self.bridge = bridge
        self.limits = limits or Limits()
        self.cgroups = cgroups or CgroupTree()
        self.allow_unlimited = allow_unlimited
        self.root = workroot / "gvisor"
        self.hidden = [str(Path(h).resolve()) for h in [*hidden, str(workroot)]]
        self._snapshot = snapshot
        self.ca_file = ca_file
        self._lock = threading.Lock()
        self._unenforceable: tuple[GuestLimit, ...] | None = None
        self._unavailable: str | None = None
        self._probed = False
        self._template: Template | None = None
        self._template_done = threading.Event()  # made, or given up
        self._closed = threading.Event()
        self._builder: threading.Thread | None = None
        self.ahead = (
            RestoredAhead(
                ahead,
                addresses,
                template=lambda: self._template,
                restore=self._restore_ahead,
                remove=self._remove,
                drop_template=self._drop_template,
            )
            if snapshot and ahead > 0 and addresses is not None
            else None
        )

    # -- what this host allows ----------------------------------------------------------------------

    def unenforced_limits(self) -> tuple[GuestLimit, ...]:
        with self._lock:
            if self._unenforceable is None:
                self._unenforceable = self.cgroups.unenforceable(self.limits)
            return self._unenforceable

    def probe(self) -> str | None:
        """runsc is there and a trial sandbox ran here (tried once)."""
        if shutil.which(RUNSC) is None:
            return "runsc (gVisor) is not installed (make setup installs it)"
        why = network.probe()
        if why is not None:
            return why
        missing = self.unenforced_limits()
        if missing and not self.allow_unlimited:
            return unenforced_message(missing, self.cgroups.top)
        with self._lock:
            if not self._probed:
                self._unavailable = self._trial()
                self._probed = True
            return self._unavailable

    def _trial(self) -> str | None:
        """Run `true` in a sandbox like a guest's (netstack in a namespace of its own)."""
        trial = f"probe-{uuid.uuid4().hex[:12]}"
        ns = f"{TEMPLATE_NETNS}{self.bridge.name}-{trial}"
        bundle = self._dir("bundles", trial)
        try:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            bundle.mkdir(mode=0o700, exist_ok=True)
            home = bundle / "home"
            _prepare_home(home)
            self._write_bundle(bundle, self._config(["/usr/bin/true"], {}, home, ns, []))
            self._runsc_in([], bundle / "trial.log", "run", "--bundle", str(bundle), trial)
        except (OSError, RunscError, subprocess.SubprocessError) as exc:
            return f"a trial gVisor sandbox did not run: {exc}"
        finally:
            self._runsc_quiet("delete", "-force", trial)
            with contextlib.suppress(RunscError):
                _ip("netns", "del", ns)
            shutil.rmtree(bundle, ignore_errors=True)
        return None

    # -- the snapshot -------------------------------------------------------------------------------

    def start_pool(self) -> None:
        """Make the snapshot restored guests start from (in the background)."""
        if self._snapshot and self._builder is None and self.probe() is None:
            self._builder = threading.Thread(target=self._build_template, name="gvisor-template", daemon=True)
            self._builder.start()
            if self.ahead is not None:
                self.ahead.start()

    @property
    def template(self) -> Template | None:
        """The snapshot restored guests start from, once it is ready."""
        return self._template

    def wait_warm(self, timeout: float) -> bool:
        """Whether the snapshot (and a guest restored ahead, when there are
        any) is ready within `timeout` (benchmarks, tests); False at once
        when no snapshot is being made."""
        if self._builder is None:
            return False
        started = time.monotonic()
        self._template_done.wait(timeout)
        if self._template is None or self.ahead is None:
            return self._template is not None
        return self.ahead.wait_ready(max(0.0, timeout - (time.monotonic() - started)))

    def _build_template(self) -> None:
        try:
            template = self._make_template()
            if self._closed.is_set():
                shutil.rmtree(template.image, ignore_errors=True)
                return
            self._template = template
            log.info("gVisor snapshot ready", extra={"image": str(template.image)})
        except (OSError, RunscError, TimeoutError, subprocess.SubprocessError) as exc:
            log.warning("no gVisor snapshot: guests start cold: %s", exc)
        finally:
            self._template_done.set()

    # -- guests -------------------------------------------------------------------------------------

    def start(self, spec: GuestSpec) -> GuestHandle:
        why = self.probe()
        if why is not None:
            raise FailedPrecondition(f"gvisor driver unavailable: {why}", reason="DRIVER_UNAVAILABLE")
        ready = self.ahead.claim(spec.agent_id) if self.ahead is not None else None
        if ready is not None:
            handle = self._start_ready(spec, ready)
            if handle is not None:
                return handle
        placement = self.cgroups.place(spec.agent_id, self.limits, self.allow_unlimited)
        os.makedirs(spec.workdir, exist_ok=True)
        template = self._template if is_standard_guest(spec.command) else None
        try:
            ns = self._attach(spec)
            home = self._dir("homes", spec.agent_id)
            _prepare_home(home)
            env = _guest_env(spec)
            extras = self._guest_mounts(spec.env)
            data = None
            if template is not None:
                data = self._try_restore(spec, placement, template, ns, home, env, extras)
            if data is None:
                data = self._cold(spec, placement, ns, home, env, extras)
            pid = int((self._dir("bundles", spec.agent_id) / "pid").read_text())
        except BaseException:
            self._remove(spec.agent_id)
            raise
        return self._handle(spec, pid, data, placement.unenforced)

    def _attach(self, spec: GuestSpec) -> str:
        """The guest's namespace on the bridge (netstack takes its interface over)."""
        try:
            ns, _ = network.attach(spec.agent_id, self.bridge, spec.address)
        except (OSError, NetlinkError, network.NetworkError) as exc:
            raise Unavailable(f"could not set up the guest network: {exc}") from exc
        return ns

    def _try_restore(
        self,
        spec: GuestSpec,
        placement: Placement,
        template: Template,
        ns: str,
        home: Path,
        env: dict[str, str],
        extras: list[dict[str, Any]],
    ) -> dict[str, str] | None:
        """The guest restored from the snapshot; None when that failed (the
        snapshot is dropped: this guest and the next start cold, on a fresh
        namespace, since the failed sandbox may have taken the interface)."""
        try:
            return self._restore(spec, placement, template, ns, home, env, extras)
        except Unavailable as exc:
            log.warning("gVisor restore failed", extra={"error": exc.message})
        self._drop_template(template)
        self._runsc_quiet("delete", "-force", spec.agent_id)
        self.cgroups.kill(spec.agent_id)
        network.detach(self.bridge, spec.agent_id)
        self._attach(spec)
        return None

    def _drop_template(self, template: Template) -> None:
        """A snapshot that does not restore: guests start cold from now on."""
        if self._template is template:
            log.warning("the gVisor snapshot does not restore: guests start cold")
            self._template = None

    def _cold(
        self,
        spec: GuestSpec,
        placement: Placement,
        ns: str,
        home: Path,
        env: dict[str, str],
        extras: list[dict[str, Any]],
    ) -> dict[str, str]:
        try:
            command, interpreter = sandbox.guest_python(spec.command)
        except sandbox.SandboxUnavailable as exc:
            raise FailedPrecondition(str(exc), reason="DRIVER_UNAVAILABLE") from exc
        bound = [*interpreter, *sandbox.runtime_paths(env), *sandbox._command_files(command)]
        bundle = self._dir("bundles", spec.agent_id)
        bundle.mkdir(mode=0o700, exist_ok=True)
        config = self._config(command, env, home, ns, bound)
        config["mounts"] += extras
        self._write_bundle(bundle, config)
        self._start_container(placement, spec.agent_id, _log(spec), "run", "--bundle", str(bundle))
        return {"restored": "0"}

    def _restore(
        self,
        spec: GuestSpec,
        placement: Placement,
        template: Template,
        ns: str,
        home: Path,
        env: dict[str, str],
        extras: list[dict[str, Any]],
    ) -> dict[str, str]:
        bundle = self._dir("bundles", spec.agent_id)
        bundle.mkdir(mode=0o700, exist_ok=True)
        self._write_bundle(bundle, template.for_guest(home, ns, extras))
        attributes = {
            "swarm.agent_id": spec.agent_id,
            "swarm.tenant_id": spec.tenant_id,
            "vm.driver": str(self.name),
        }
        with tracer.start_as_current_span("vm.restore", attributes=attributes):
            start_ns, started = time.time_ns(), time.perf_counter()
            args = ("restore", f"--image-path={template.image}", "--bundle", str(bundle))
            self._start_container(placement, spec.agent_id, _log(spec), *args)
            end_ns, restore_ms = time.time_ns(), (time.perf_counter() - started) * 1000
        _assign(home, _restored_env(env, start_ns, end_ns))
        return {"restored": "1", "restore_ms": f"{restore_ms:.1f}"}

    def stop(self, handle: GuestHandle) -> None:
        """SIGTERM to the guest (its spans flushed), then the sandbox deleted
        and whatever is left in its cgroups killed. By container name: a
        recycled pid is never signalled."""
        if handle.pid and self.alive(handle):
            self._runsc_quiet("kill", handle.agent_id, "TERM")
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while self.alive(handle) and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
        self._remove(handle.agent_id)

    def alive(self, handle: GuestHandle) -> bool:
        """The sandbox process runs (it exits with the guest's program)."""
        return guest_alive(handle.pid, None, handle.pid_start_time)

    def reconcile(self, known_agent_ids: set[str]) -> list[str]:
        """Sandboxes, namespaces, cgroups and directories no live agent owns
        (what a crash left); says which sandboxes and namespaces went."""
        if shutil.which(RUNSC) is None or network.probe() is not None or not self.root.is_dir():
            return []
        containers = set(self._runsc_out("list", "-quiet").split())
        dirs = {d.name for kind in ("homes", "bundles") for d in self._dir(kind).iterdir()}
        removed = sorted(containers - known_agent_ids)
        for name in sorted((containers | dirs) - known_agent_ids):
            self._remove_container(name)
        known = {network.short_id(a) for a in known_agent_ids}
        for short in sorted(network.leftovers(self.bridge) - known):
            network.remove_by_short_id(self.bridge, short)
            removed.append(short)
        for ns in namespaces.listnetns():
            if ns.startswith(f"{TEMPLATE_NETNS}{self.bridge.name}-"):
                with contextlib.suppress(RunscError):
                    _ip("netns", "del", ns)
        for group in self.cgroups.known():
            if group.startswith(f"{TEMPLATE_GROUP}-"):
                self.cgroups.kill(group)
                self.cgroups.remove(group)
        current = self._template.image if self._template is not None else None
        for image in self._dir("images").iterdir():
            if image != current:
                shutil.rmtree(image, ignore_errors=True)
        return removed

    def close(self) -> None:
        """Stop making the snapshot and restoring guests ahead; remove them,
        and this driver's cgroup tree once no group is left in it."""
        self._closed.set()
        if self.ahead is not None:
            self.ahead.close()
        if self._builder is not None:
            self._builder.join(timeout=TEMPLATE_SECONDS)
        if self._template is not None:
            shutil.rmtree(self._template.image, ignore_errors=True)
            self._template = None
        for top in {d.parent for d in self.cgroups._dirs(TEMPLATE_GROUP)}:
            with contextlib.suppress(OSError):
                top.rmdir()
