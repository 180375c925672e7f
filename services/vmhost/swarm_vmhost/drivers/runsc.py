"""runsc for the gvisor driver: the OCI bundles guests run from (a read-only
root of mount points, the system and runtime read-only, the guest's own
directory writable), runsc's command lines, the snapshot a restored guest is
made from, and what a guest is told. The driver's lifecycle is in
swarm_vmhost.drivers.gvisor.

Each guest is an OCI bundle written for it: a read-only root (an empty
directory with the usual /usr symlinks and mount points), the system
directories and the Python and agent runtime it runs bound read-only
(swarm_vmhost.sandbox decides which: the same as the netns driver's),
vmhost's private directories covered where a bound path holds them, its
own writable work directory at /home/agent (its HOME), a private /tmp and
/proc, the CA certificate (and a tenant's local repositories, where an
operator enabled them) like a netns guest; the guests' unprivileged uid
(sandbox.GUEST_UID), no capabilities, `noNewPrivileges`.

Networking is gVisor's netstack (`--network=sandbox`): vmhost makes the
guest's namespace on the bridge (network.attach) and names it in the
bundle; runsc takes the namespace's interface over, so even the guest's
TCP/IP is gVisor's and the host kernel sees only its frames. (runsc of
December 2022 takes every namespace for the host's on kernels that show
/proc/sys/net/core/rmem_default in all of them, and refuses: runsc is run
in a mount namespace of its own where /proc/sys/net is an empty tmpfs. The
namespace it is given is always the guest's own, named in the bundle.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyroute2 import netns as namespaces

from swarm_vmhost import network, sandbox
from swarm_vmhost.cgroups import CgroupTree, Limits
from swarm_vmhost.domain import GuestSpec
from swarm_vmhost.drivers.base import guest_alive, process_start_time
from swarmcommon.errors import FailedPrecondition

log = logging.getLogger(__name__)

RUNSC = "runsc"
# kvm hangs on these machines (nested virtualisation); systrap is newer than
# Debian's runsc. ptrace works everywhere, slowly.
PLATFORM = "ptrace"
# What runsc is run through: its own mount namespace, /proc/sys/net hidden
# (see the module's docstring), then runsc with the arguments given.
HIDE_NET_SYSCTL = 'mount -t tmpfs -o ro,size=4k swarm-none /proc/sys/net && exec "$@"'
# A guest's assignment (restored guests), in its work directory.
ASSIGNMENT = ".swarm-assignment"
RESTORABLE = ("-m", "swarmagent.restorable", f"{sandbox.GUEST_HOME}/{ASSIGNMENT}")
# How the guest's work wrapper learns of its restore (swarmagent.vm): the
# real work function, and "<start ns> <end ns> <driver>" on the host's clock.
WORK_ENV, REAL_WORK_ENV, RESTORE_ENV = "SWARM_AGENT_WORK", "SWARM_VM_WORK", "SWARM_VM_RESTORE"
RESTORED_WORK = "swarmagent.vm:work"
READY = "warm"  # what swarmagent.restorable says once the runtime is imported
TEMPLATE_SECONDS = 300.0  # importing the runtime under ptrace on a busy host
RUNSC_SECONDS = 60.0
POLL_SECONDS = 0.05
TEMPLATE_GROUP = "gvisor-template"
TEMPLATE_PREFIX = "template-"  # the snapshot's container
TEMPLATE_NETNS = "gvt-"  # + the bridge's name: the snapshot's namespace (loopback only)


class RunscError(Exception):
    """A runsc command failed; the message is its own."""


class RunscBundles:
    """The bundle and runsc half of the gvisor driver (a base of GvisorDriver)."""

    root: Path
    bridge: network.Bridge
    limits: Limits
    cgroups: CgroupTree
    hidden: list[str]
    _closed: threading.Event

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    def _dir(self, kind: str, name: str = "") -> Path:
        """`<root>/<kind>/<name>`, made (private to root) when missing."""
        for d in (self.root, self.root / kind):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.root / kind / name if name else self.root / kind

    # -- the snapshot ----------------------------------------------------------------------------

    def _make_template(self) -> Template:
        """Start the restorable guest, wait until it has imported the
        runtime, checkpoint it. Only its image and its bundle's
        configuration are kept."""
        suffix = uuid.uuid4().hex[:12]
        name = f"{TEMPLATE_PREFIX}{suffix}"
        ns = f"{TEMPLATE_NETNS}{self.bridge.name}-{suffix}"
        group = f"{TEMPLATE_GROUP}-{suffix}"
        bundle = self._dir("bundles", name)
        image = self._dir("images", name)
        try:
            placement = self.cgroups.create(group, self.limits)
            bundle.mkdir(mode=0o700, exist_ok=True)
            home = bundle / "home"
            _prepare_home(home)
            env = _base_env()
            command, interpreter = sandbox.guest_python([sys.executable, *RESTORABLE])
            bound = [*interpreter, *sandbox.runtime_paths(env)]
            config = self._config(command, env, home, ns, bound)
            self._write_bundle(bundle, config)
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            log_path = bundle / "guest.log"
            started = time.perf_counter()
            pid_file = bundle / "pid"
            self._runsc_in(
                placement.dirs,
                log_path,
                "run",
                "--bundle",
                str(bundle),
                "-detach",
                "--pid-file",
                str(pid_file),
                name,
            )
            _ip("netns", "del", ns)  # the sandbox keeps it; its name is not needed any more
            self._await_ready(log_path, int(pid_file.read_text()))
            cold_seconds = time.perf_counter() - started
            self._runsc("checkpoint", f"--image-path={image}", name)
        except BaseException:
            shutil.rmtree(image, ignore_errors=True)
            raise
        finally:
            self._runsc_quiet("delete", "-force", name)
            self.cgroups.kill(group)
            self.cgroups.remove(group)
            with contextlib.suppress(RunscError):
                if ns in namespaces.listnetns():
                    _ip("netns", "del", ns)
            shutil.rmtree(bundle, ignore_errors=True)
        log.info("gVisor snapshot taken", extra={"cold_seconds": round(cold_seconds, 1)})
        return Template(image, config, cold_seconds)

    def _await_ready(self, log_path: Path, pid: int) -> None:
        """Until the snapshot's guest says it has imported the runtime."""
        deadline = time.monotonic() + TEMPLATE_SECONDS
        started = process_start_time(pid)
        while time.monotonic() < deadline and not self._closed.is_set():
            text = log_path.read_text(errors="replace")
            if READY in text.split():
                return
            if not guest_alive(pid, None, started):
                raise RunscError(f"the snapshot's guest exited: {text[-400:].strip() or 'no output'}")
            time.sleep(POLL_SECONDS * 10)
        raise TimeoutError("the snapshot's guest did not import the runtime in time")

    # -- bundles and runsc --------------------------------------------------------------------------

    def _config(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        home: Path,
        ns: str,
        bound: Sequence[str],
    ) -> dict[str, Any]:
        """The OCI configuration of a guest running `args` with `env`: `bound`
        read-only besides the system's directories, `home` its work
        directory, in the network namespace `ns`. The same for every guest
        of a command (the snapshot's fits them all); what differs between
        guests is appended after (_guest_mounts)."""
        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
        ]
        ro = [d for d in sandbox.SYSTEM_DIRS if os.path.isdir(d)]
        ro += [f for f in sandbox.SYSTEM_FILES if os.path.exists(f)]
        extra = sorted({p for p in bound if p and os.path.exists(p)} - set(ro))
        for path in [*ro, *extra]:
            mounts.append(_bind(path, path, "ro"))
        for path in self.hidden:
            inside = any(path == b or path.startswith(b.rstrip("/") + "/") for b in [*ro, *extra])
            if inside and os.path.isdir(path):
                mounts.append({"destination": path, "type": "tmpfs", "source": "tmpfs", "options": ["ro"]})
        mounts.append(_bind(str(home), sandbox.GUEST_HOME, "rw"))
        self._make_mount_points(mounts)
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": sandbox.GUEST_UID, "gid": sandbox.GUEST_GID},
                "args": list(args),
                "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": sandbox.GUEST_HOME,
                "capabilities": {
                    k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")
                },
                "noNewPrivileges": True,
            },
            "root": {"path": str(self.rootfs), "readonly": True},
            "hostname": "guest",
            "mounts": mounts,
            "linux": {
                "namespaces": [
                    {"type": "pid"},
                    {"type": "ipc"},
                    {"type": "uts"},
                    {"type": "mount"},
                    {"type": "network", "path": f"/run/netns/{ns}"},
                ],
                "seccomp": sandbox.oci_seccomp(),
            },
        }

    def _guest_mounts(self, env: Mapping[str, str]) -> list[dict[str, Any]]:
        """What one guest has that others may not: the CA certificate (a
        readable copy, at sandbox.GUEST_CA_FILE) and the tenant's local
        repositories (development only), read-write at their path."""
        mounts = []
        ca = sandbox.publish_ca(env.get(sandbox.CA_FILE_ENV, ""), self.root)
        if ca:
            mounts.append(_bind(ca, sandbox.GUEST_CA_FILE, "ro"))
        local_root = env.get(sandbox.LOCAL_ROOT_ENV, "")
        if local_root:
            if not os.path.isdir(local_root):
                raise FailedPrecondition(
                    f"the local repository directory {local_root} is missing", reason="DRIVER_UNAVAILABLE"
                )
            mounts.append(_bind(local_root, local_root, "rw"))
        self._make_mount_points(mounts)
        return mounts

    def _make_mount_points(self, mounts: Sequence[Mapping[str, Any]]) -> None:
        """The root is read-only: every mount point is made in it beforehand
        (and the /usr symlinks of a merged-/usr system)."""
        self.rootfs.mkdir(mode=0o755, parents=True, exist_ok=True)
        for link, target in sandbox.USR_LINKS.items():
            path = self.rootfs / link.lstrip("/")
            if not path.is_symlink() and os.path.isdir(os.path.join("/usr", target.removeprefix("usr/"))):
                path.symlink_to(target)
        for m in mounts:
            point = self.rootfs / str(m["destination"]).lstrip("/")
            if m["type"] == "bind" and os.path.isfile(m["source"]):
                point.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                point.touch(mode=0o644, exist_ok=True)
            else:
                point.mkdir(mode=0o755, parents=True, exist_ok=True)

    @staticmethod
    def _write_bundle(bundle: Path, config: Mapping[str, Any]) -> None:
        """config.json, readable by root only (a cold guest's holds its token)."""
        fd = os.open(bundle / "config.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)

    def _argv(self, *args: str) -> list[str]:
        """runsc with `args` after the global flags every command shares."""
        # --oci-seccomp: the bundle's filter (sandbox.oci_seccomp) is enforced
        # inside gVisor's kernel: no user namespaces (in which a guest would
        # hold every capability of gVisor's, raw sockets included), no mounts.
        flags = ["--root", str(self._dir("state")), "--ignore-cgroups", "--network=sandbox", "--oci-seccomp"]
        return [RUNSC, *flags, f"--platform={PLATFORM}", *args]

    def _runsc(self, *args: str) -> str:
        argv = self._argv(*args)
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=RUNSC_SECONDS, check=False, env=_runsc_env()
            )
        except subprocess.TimeoutExpired as exc:
            raise RunscError(f"runsc {args[0]} did not finish in {RUNSC_SECONDS:.0f} s") from exc
        if done.returncode != 0:
            raise RunscError(f"runsc {args[0]}: {(done.stderr or done.stdout).strip()[-400:]}")
        return done.stdout

    def _runsc_out(self, *args: str) -> str:
        try:
            return self._runsc(*args)
        except RunscError:
            return ""

    def _runsc_quiet(self, *args: str) -> None:
        """A clean-up step whose failure changes nothing (no such container)."""
        self._runsc_out(*args)

    def _runsc_in(self, groups: Sequence[Path], log_path: Path, *args: str) -> None:
        """runsc with `args`, started inside `groups` (the shell joins them and
        execs it), in a mount namespace of its own; its output and the guest's
        go to `log_path`."""
        joins = "".join(f"echo $$ > {shlex.quote(str(self.cgroups.procs_file(d)))} && " for d in groups)
        hide = f"unshare --mount --propagation private -- sh -c {shlex.quote(HIDE_NET_SYSCTL)} runsc"
        script = f'{joins}exec {hide} "$@"'
        with open(log_path, "ab") as out:
            start = out.tell()
            done = subprocess.run(
                ["sh", "-c", script, "runsc", *self._argv(*args)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=RUNSC_SECONDS,
                check=False,
                env=_runsc_env(),
                start_new_session=True,
            )
        if done.returncode != 0:
            with open(log_path, "rb") as f:
                f.seek(start)
                said = f.read().decode(errors="replace").strip()
            raise RunscError(f"runsc {args[0]}: {said[-400:] or f'exit status {done.returncode}'}")


class Template:
    """A checkpointed restorable guest: its image, its bundle's configuration,
    and how long it took to start cold until the runtime was imported (what
    a restore saves)."""

    def __init__(self, image: Path, config: Mapping[str, Any], cold_seconds: float) -> None:
        self.image = image
        self.config = config
        self.cold_seconds = cold_seconds

    def for_guest(self, home: Path, ns: str, extras: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The template's configuration with the guest's work directory and
        namespace, and its own mounts after the template's (a restore takes
        the template's mounts in the same order; more may follow)."""
        config: dict[str, Any] = json.loads(json.dumps(self.config))
        config["mounts"] += [dict(m) for m in extras]
        for m in config["mounts"]:
            if m["destination"] == sandbox.GUEST_HOME:
                m["source"] = str(home)
        for n in config["linux"]["namespaces"]:
            if n["type"] == "network":
                n["path"] = f"/run/netns/{ns}"
        return config


def _bind(source: str, destination: str, mode: str) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": source, "options": ["rbind", mode]}


def _guest_env(spec: GuestSpec) -> dict[str, str]:
    """The guest's environment: HOME its work directory, the CA where it is bound."""
    env = {**spec.env, "HOME": sandbox.GUEST_HOME}
    if env.get(sandbox.CA_FILE_ENV):
        env[sandbox.CA_FILE_ENV] = sandbox.GUEST_CA_FILE
    return env


def _restored_env(env: Mapping[str, str], start_ns: int, end_ns: int) -> dict[str, str]:
    """A restored guest's work function wrapped so that its first ticket's
    trace shows the restore (swarmagent.vm.RestoredWork)."""
    restored = dict(env)
    if restored.get(WORK_ENV):
        restored[REAL_WORK_ENV] = restored[WORK_ENV]
        restored[RESTORE_ENV] = f"{start_ns} {end_ns} gvisor"
        restored[WORK_ENV] = RESTORED_WORK
    return restored


def _assign(home: Path, env: Mapping[str, str]) -> None:
    """The assignment, whole or not at all: written aside (0600, the guest's)
    and renamed into place."""
    aside = home / f"{ASSIGNMENT}.new"
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchown(fd, sandbox.GUEST_UID, sandbox.GUEST_GID)
        os.write(fd, json.dumps(dict(env)).encode())
    finally:
        os.close(fd)
    os.rename(aside, home / ASSIGNMENT)


def _prepare_home(home: Path) -> None:
    """A guest's work directory: the guest's own (gVisor checks its uid
    against the host's owner), private, under vmhost's private directory."""
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, sandbox.GUEST_UID, sandbox.GUEST_GID)


def _base_env() -> dict[str, str]:
    """The snapshot's environment: only what finds Python (it holds no secret)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": sandbox.GUEST_HOME}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _runsc_env() -> dict[str, str]:
    """runsc's own environment: none of vmhost's (a cold guest's is in its bundle)."""
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RunscError(f"ip {' '.join(args)}: {done.stderr.strip()}")
