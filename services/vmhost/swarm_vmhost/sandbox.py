"""What a hardened guest sees: a bubblewrap sandbox inside its network namespace.

The guest runs as an unprivileged uid in new user, mount, PID, IPC, UTS and
cgroup namespaces, with every capability dropped, `no_new_privs`, a seccomp
filter and no way to make another user namespace. Its file system is built
from nothing: the system directories and the Python it runs, read-only; a
private `/tmp`; its own work directory (also its HOME) writable; the CA file
it verifies the services with. Nothing else of the host is there: no host
`/proc` (a fresh one of its own PID namespace), no `/run/netns`, no service
database, no other guest's directory. `nsenter --net=/proc/1/ns/net` fails
(the guest's pid 1 is its own init, and it holds no CAP_SYS_ADMIN anyway).
On the host the guest is an unprivileged uid (HOST_UID), not root.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import os
import shutil
import stat
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pyseccomp

log = logging.getLogger(__name__)

# The uid/gid guests run as, inside and on the host (no host account has
# it). bubblewrap is started as that uid, not as root: its user namespace
# then maps the guest to it, so what a guest could reach on the host it
# reaches as nobody in particular, never as root. Every driver uses it, so
# what a guest writes (its work directory, a local repository) is owned alike.
HOST_UID = HOST_GID = 61000
GUEST_UID, GUEST_GID = HOST_UID, HOST_GID
# Where the guest finds its work directory (and HOME), whatever the host path,
# and the CA certificate it verifies the services with.
GUEST_HOME = "/home/agent"
GUEST_CA_FILE = "/etc/swarm/ca.crt"
CA_FILE_ENV = "SWARM_AGENT_CA_FILE"
# A tenant's local repositories (development only), bound read-write when set.
LOCAL_ROOT_ENV = "SWARM_GIT_LOCAL_ROOT"
# Read-only system directories every guest program needs (Debian merged /usr).
SYSTEM_DIRS = ("/usr", "/etc/ssl", "/etc/ca-certificates", "/etc/alternatives")
SYSTEM_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/localtime")
USR_LINKS = {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}
# The packages the agent runtime imports; their source roots are bound read-only.
RUNTIME_PACKAGES = ("swarmagent", "swarmcommon", "swarm")

# Refused with EPERM whatever the arguments: kernel and namespace surgery,
# other processes' memory, kernel keyrings, BPF, perf, io_uring, userfaultfd
# and clock changes. No guest program needs them; each has been a way out.
DENIED_SYSCALLS = (
    "acct", "add_key", "bpf", "chroot", "clock_adjtime", "clock_settime", "delete_module",
    "fanotify_init", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "init_module",
    "io_uring_enter", "io_uring_register", "io_uring_setup", "ioperm", "iopl", "kcmp",
    "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount", "mount_setattr",
    "move_mount", "move_pages", "name_to_handle_at", "nfsservctl", "open_by_handle_at",
    "open_tree", "perf_event_open", "personality", "pivot_root", "process_vm_readv",
    "process_vm_writev", "ptrace", "quotactl", "reboot", "request_key", "setns", "settimeofday",
    "swapoff", "swapon", "syslog", "umount2", "unshare", "uselib", "userfaultfd", "vhangup",
    "adjtimex", "pidfd_getfd",
)  # fmt: skip
CLONE_NEWUSER = 0x10000000


def oci_seccomp() -> dict[str, object]:
    """The same filter as an OCI runtime spec's `linux.seccomp` (what the
    gvisor driver gives runsc, which enforces it inside its own kernel).
    Without clone3's ENOSYS: this runsc answers a refused call with EPERM
    whatever the spec says, and libc then cannot start threads. clone3 with
    CLONE_NEWUSER (raw syscall only) is thus not refused under gVisor; the
    bridge filter still holds whatever such a guest sends."""
    eperm = {"action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}
    newuser = {"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": list(DENIED_SYSCALLS), **eperm},
            {"names": ["clone"], **eperm, "args": [newuser]},
        ],
    }


class SandboxUnavailable(RuntimeError):
    """bubblewrap or the seccomp library is missing; the message says which."""


def probe() -> str | None:
    """None when hardened guests can be made here, else why not."""
    for tool, package in (("bwrap", "bubblewrap"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} ({package}) is not installed: hardened guests need it (make setup installs it)"
    try:
        seccomp_file()
    except OSError as exc:
        return f"cannot build the guests' seccomp filter: {exc}"
    return None


@cache
def seccomp_file() -> Path:
    """The compiled seccomp filter (BPF), built once per process with libseccomp."""
    flt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            flt.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
        except OSError:
            continue  # a syscall this kernel/architecture does not have
    # No new user namespace through clone(2) either; clone3 passes its flags
    # in memory a filter cannot read, so it says "not implemented" and libc
    # falls back to clone.
    flt.add_rule(
        pyseccomp.ERRNO(errno.EPERM),
        "clone",
        pyseccomp.Arg(0, pyseccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER),
    )
    flt.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    fd, name = tempfile.mkstemp(prefix="swarm-seccomp-", suffix=".bpf")
    with os.fdopen(fd, "wb") as f:
        flt.export_bpf(f)
    return Path(name)


def walkable(path: str) -> bool:
    """Whether any user may look `path` up (every directory above it searchable
    by others): bubblewrap, running as HOST_UID, can bind only such paths."""
    p = Path(path).resolve()
    return all(
        os.stat(d).st_mode & stat.S_IXOTH for d in [*reversed(p.parents), *([p] if p.is_dir() else [])]
    )


def site_packages() -> str:
    """The runtime's site-packages (the virtual environment's, else the interpreter's)."""
    return sysconfig.get_path("purelib")


def system_python() -> str | None:
    """The system's interpreter of this Python version, when there is one."""
    candidate = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    return candidate if os.access(candidate, os.X_OK) else None


# Runs a module or script like `python -m` / `python <file>` would, after adding
# the runtime's site-packages (its .pth files included) to the path.
BOOT = (
    "import runpy, site, sys\n"
    "site.addsitedir(sys.argv.pop(1))\n"
    "a = sys.argv[1:]\n"
    "if a[0] == '-m':\n"
    "    sys.argv = a[1:]\n"
    "    runpy.run_module(a[1], run_name='__main__', alter_sys=True)\n"
    "else:\n"
    "    sys.argv = a\n"
    "    runpy.run_path(a[0], run_name='__main__')\n"
)


def guest_python(command: Sequence[str]) -> tuple[list[str], list[str]]:
    """`command` as a guest runs it, and the paths its Python needs read-only.

    A command run by this interpreter keeps it when bubblewrap can bind its
    installation; otherwise (a Python installed under /root, say) it is run by
    the system's Python of the same version (the one a VM image carries) with
    the runtime's site-packages. Any other command is left alone."""
    command = list(command)
    own = {sys.executable, os.path.realpath(sys.executable)}
    if not command or command[0] not in own:
        return command, []
    if walkable(sys.base_prefix):
        return command, [sys.base_prefix, sys.prefix]
    python = system_python()
    if python is None:
        raise SandboxUnavailable(
            f"the guest interpreter under {sys.base_prefix} is not readable by the guests' uid and there "
            f"is no /usr/bin/python{sys.version_info.major}.{sys.version_info.minor} to run instead"
        )
    site_dir = site_packages()
    return [python, "-S", "-c", BOOT, site_dir, *command[1:]], [site_dir]


def runtime_paths(env: Mapping[str, str]) -> list[str]:
    """What the guest's Python needs to read besides its interpreter: the agent
    runtime's source roots and the guest's PYTHONPATH entries."""
    paths = set()
    for package in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            paths.add(str(Path(location).resolve().parent))
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    for p in extra:
        if os.path.isdir(p) and not os.stat(p).st_mode & stat.S_IROTH:
            _warn_unlistable(p)
    paths.update(extra)
    return sorted(p for p in paths if os.path.isabs(p) and os.path.exists(p))


@cache
def _warn_unlistable(path: str) -> None:
    # Python finds modules by listing a path entry's directory: one the guests'
    # uid may enter but not list imports nothing, and silently so.
    log.warning("PYTHONPATH entry %s is not readable by other users: guests import nothing from it", path)


def home_root(preferred: Path, name: str) -> Path:
    """Where guests' work directories go: under `preferred` when any user may
    walk to it, else a directory of vmhost's own under /var/tmp (test and
    service temp directories are often private to root)."""
    for root in (preferred, Path("/var/tmp") / f"swarm-guests-{name}"):
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o711)  # walkable, not listable: a guest cannot see the others
        if walkable(str(root)):
            return root
        root.rmdir()
    raise SandboxUnavailable(f"no directory for guests' work the guests' uid can reach ({preferred})")


def publish_ca(ca_file: str, root: Path) -> str:
    """A copy of the CA certificate any user may read (the original may sit
    beside private keys in a directory only root can enter); "" without one."""
    if not ca_file:
        return ""
    copy = root / ".ca.crt"
    data = Path(ca_file).read_bytes()
    if not copy.exists() or copy.read_bytes() != data:
        staged = root / f".ca.crt.{os.getpid()}"
        staged.write_bytes(data)
        staged.chmod(0o644)
        staged.replace(copy)
    return str(copy)


def prepare_home(home: Path) -> None:
    """A guest's work directory: made here, private to the guest's host uid."""
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, HOST_UID, HOST_GID)


def _command_files(command: Sequence[str]) -> list[str]:
    """Files the command names by absolute path outside the system
    directories (a script to run), to bind read-only."""
    system = tuple(d.rstrip("/") + "/" for d in SYSTEM_DIRS)
    return [a for a in command if os.path.isabs(a) and os.path.isfile(a) and not a.startswith(system)]


@dataclass
class Launch:
    """A bubblewrap command line and the descriptors it reads (pass them to
    the child: `pass_fds`); `close()` once the child has started."""

    argv: list[str]
    fds: list[int] = field(default_factory=list)

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()

    def fd(self, path: str | Path) -> str:
        """Open `path` here for bubblewrap to read by number."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.fds.append(fd)
        return str(fd)


def launch(
    command: Sequence[str],
    env: Mapping[str, str],
    home: str,
    *,
    ro_files: Iterable[str] = (),
    hidden: Iterable[str] = (),
    ca_file: str = "",
    new_netns: bool = False,
    info_fd: int | None = None,
) -> Launch:
    """The bubblewrap command line that runs `command` confined. Run it with
    the guest's environment and nothing else (`env`): bubblewrap passes its own
    environment on, and a token on a command line would be readable by anyone
    on the host.

    `home` (host path) is the guest's writable work directory, seen as
    GUEST_HOME; `ro_files` are extra files bound read-only at the same path;
    `ca_file` (a walkable copy, see publish_ca) is bound at GUEST_CA_FILE;
    the tenant's local repository directory, when the environment names one
    (LOCAL_ROOT_ENV), is bound read-write at its path; `hidden` are host directories covered with an empty
    tmpfs should a bound path contain them (the service databases, other
    guests' directories). `new_netns` gives the sandbox a network namespace
    of its own (the host plugs it into the bridge afterwards); otherwise the
    sandbox keeps the namespace it is started in.

    bubblewrap runs as HOST_UID, so every path it binds must be one any user
    may look up (`walkable`): an interpreter under /root is replaced by the
    system's (guest_python), and `home` must lie under a walkable directory
    (home_root).
    """
    command, interpreter = guest_python(command)
    if not walkable(str(Path(home).parent)):
        raise SandboxUnavailable(f"the guest's work directory {home} is not reachable by the guests' uid")
    run = Launch([])
    seccomp = run.fd(seccomp_file())
    argv = [
        "setpriv", "--reuid", str(HOST_UID), "--regid", str(HOST_GID), "--clear-groups",
        "--inh-caps=-all", "--",
        "bwrap",
        "--unshare-user", "--uid", str(GUEST_UID), "--gid", str(GUEST_GID), "--disable-userns",
        "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--hostname", "guest", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--seccomp", seccomp,
    ]  # fmt: skip
    if new_netns:
        argv.append("--unshare-net")
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
        run.fds.append(info_fd)
    # First: a private /tmp and /proc, so that binds of paths under /tmp (a
    # checkout cloned there) land on top of it rather than under it.
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for d in SYSTEM_DIRS:
        if os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    for f in SYSTEM_FILES:
        if os.path.exists(f):
            argv += ["--ro-bind", f, f]
    for link, target in USR_LINKS.items():
        if os.path.isdir(os.path.join("/usr", target.removeprefix("usr/"))):
            argv += ["--symlink", target, link]
    bound = [
        *interpreter,
        *runtime_paths(env),
        *_command_files(command),
        *(f for f in ro_files if f and os.path.exists(f)),
    ]
    for path in sorted(set(bound)):
        if not walkable(path):
            raise SandboxUnavailable(f"{path} is not readable by the guests' uid ({HOST_UID})")
        argv += ["--ro-bind", path, path]
    for path in hidden:
        if any(path == b or path.startswith(b.rstrip("/") + "/") for b in bound) and os.path.isdir(path):
            argv += ["--tmpfs", path]
    if ca_file:
        argv += ["--ro-bind", ca_file, GUEST_CA_FILE]
    argv += [
        "--bind", home, GUEST_HOME, "--chdir", GUEST_HOME,
    ]  # fmt: skip
    local_root = env.get(LOCAL_ROOT_ENV, "")
    if local_root:
        if not os.path.isdir(local_root) or not walkable(local_root):
            raise SandboxUnavailable(
                f"the local repository directory {local_root} is missing or out of the guests' uid's reach"
            )
        argv += ["--bind", local_root, local_root]
    argv += ["--setenv", "HOME", GUEST_HOME, "--", *command]
    run.argv = argv
    return run
