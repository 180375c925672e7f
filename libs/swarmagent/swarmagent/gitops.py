"""The git work an agent does in its workspace: clone the project's
repository, branch, write files, commit, push, and (for reviewers) merge.

Plain `git` through subprocess: the agent needs exactly what the CLI does
(its transports, its merge machinery). File paths come from an LLM and are
untrusted: they must stay inside the work tree and out of `.git`, and are
written without following a symlink at any component (the tenant's
repository may hold `docs -> /`). Branch names come from other agents'
results: each is checked (swarmcommon.gitnames) and passed after
`--end-of-options`, so none is ever read as an option.

What git may reach and read is a GitPolicy: an environment built from
scratch (no host HOME, configuration, ssh keys, known hosts or agent), only
the https and ssh transports (no `ext::` command, no `file://` or local
path), and local repositories only where an operator enabled them, under
the tenant's own directory, and never through a submodule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

from swarmagent import stopping
from swarmcommon.gitnames import check_branch
from swarmcommon.gitrepos import is_under, local_segments, parse

MAX_FILE_BYTES = 512 * 1024


class GitError(Exception):
    """A git command failed; the message carries git's own words."""


class RepositoryRefused(GitError):
    """A repository this agent may not clone (a transport or place it is not allowed)."""


@dataclass(frozen=True)
class Author:
    name: str
    email: str


# Who git says did what no ticket's author did (reflog entries of clone, fetch, merge).
DEFAULT_IDENTITY = Author("swarm-agent", "agent@swarm.invalid")

# From the guest's environment, what git still needs: an operator's egress
# proxy and the CA bundle it trusts for its git host.
PASSED_THROUGH = (
    "PATH",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "GIT_SSL_CAINFO",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


# git's other transports (and the remote helpers Debian's git ships): ext
# and fd run commands or use descriptors; git://, http:// and ftp(s):// are
# unauthenticated. Unknown ones fall under protocol.allow=never.
REFUSED_TRANSPORTS = ("ext", "fd", "git", "http", "ftp", "ftps")
# GIT_ASKPASS: git runs it with its prompt ("Username for 'https://host': ",
# "Password for 'https://user@host': ") and reads the answer from its output.
# It answers only for the ticket's repository's host: a redirect (or anything
# else the repository steers) to another host gets nothing.
ASKPASS_ENV = ("SWARM_GIT_USERNAME", "SWARM_GIT_PASSWORD", "SWARM_GIT_ORIGIN", "SWARM_GIT_PASSWORD_FOR")
ASKPASS = """#!/bin/sh
case "$1" in
  "Username for '$SWARM_GIT_ORIGIN': ") printf '%s\\n' "$SWARM_GIT_USERNAME" ;;
  "Password for '$SWARM_GIT_PASSWORD_FOR': ") printf '%s\\n' "$SWARM_GIT_PASSWORD" ;;
  *) exit 1 ;;
esac
"""


@dataclass(frozen=True)
class GitPolicy:
    """What git may reach and what it runs with.

    `home`: git's HOME, a directory the agent owns (curl's ~/.netrc and
    git's ~/.config/git are read from there, not the host's).
    `local_root`: local repositories (paths, file://) are allowed only
    strictly inside this directory; None refuses them, and git itself then
    refuses the file transport.
    `known_hosts`: the ssh host keys the operator trusts; without one, ssh
    connects nowhere (no host key can be checked).
    `credential`: (origin, username, password) for the ticket's https
    repository, answered by GIT_ASKPASS to git's prompts for that origin
    only (never in a URL or a file); without one git asks nobody and an
    https repository that wants one fails."""

    home: Path
    local_root: Path | None = None
    known_hosts: Path | None = None
    credential: tuple[str, str, str] | None = field(default=None, repr=False)

    def with_credential(self, repository: str, username: str, password: str) -> GitPolicy:
        """This policy with a credential for `repository`'s https origin."""
        url = urlsplit(repository)
        if url.scheme != "https" or not url.hostname:
            raise RepositoryRefused(f"credentials go over https only, not to {repository[:200]!r}")
        origin = f"https://{url.netloc.rpartition('@')[2]}"
        return dataclasses.replace(self, credential=(origin, username, password))

    @classmethod
    def from_environment(cls, env: Mapping[str, str], home: Path) -> GitPolicy:
        """SWARM_GIT_LOCAL_ROOT (set by vmhost where local repositories are
        enabled: the tenant's own directory) and SWARM_GIT_KNOWN_HOSTS."""
        local, known = env.get("SWARM_GIT_LOCAL_ROOT", ""), env.get("SWARM_GIT_KNOWN_HOSTS", "")
        return cls(home, Path(local) if local else None, Path(known) if known else None)

    def environment(self) -> dict[str, str]:
        """git's whole environment: nothing else of the guest's reaches it."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        known = str(self.known_hosts) if self.known_hosts else os.devnull
        ssh = [
            "ssh",
            "-F",
            os.devnull,  # no ~/.ssh/config (ssh reads the passwd home, not $HOME)
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityFile=none",  # no ~/.ssh/id_* of whoever runs the guest
            "-o",
            "IdentityAgent=none",
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            f"GlobalKnownHostsFile={os.devnull}",
            "-o",
            "StrictHostKeyChecking=yes",
        ]
        env = {key: os.environ[key] for key in PASSED_THROUGH if key in os.environ}
        if self.credential is not None:
            origin, username, password = self.credential
            for_password = f"https://{quote(username, safe='')}@{origin.removeprefix('https://')}"
            env |= dict(zip(ASKPASS_ENV, (username, password, origin, for_password), strict=True))
            env["GIT_ASKPASS"] = str(self._askpass())
        return env | {
            "HOME": str(self.home),
            "LC_ALL": "C",
            "GIT_TERMINAL_PROMPT": "0",
            # An identity for the reflog entries of clone, fetch and merge:
            # without one git makes one up from the host name, looked up in
            # DNS — which a sandboxed guest cannot reach, so every such step
            # waited out the resolver's 10 s. Commits still carry the
            # ticket's author (`_git(author=...)`).
            "GIT_COMMITTER_NAME": DEFAULT_IDENTITY.name,
            "GIT_COMMITTER_EMAIL": DEFAULT_IDENTITY.email,
            "GIT_AUTHOR_NAME": DEFAULT_IDENTITY.name,
            "GIT_AUTHOR_EMAIL": DEFAULT_IDENTITY.email,
            # No ~/.gitconfig or /etc/gitconfig: no credential helpers, hooks
            # paths or aliases of whoever runs the guest.
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_SSH_COMMAND": shlex.join(ssh),
            "GIT_SSH_VARIANT": "ssh",
            **_config(
                ("protocol.allow", "never"),
                # Each transport named: a repository's own protocol.<name>.allow
                # would outrank protocol.allow, not these.
                *((f"protocol.{name}.allow", "never") for name in REFUSED_TRANSPORTS),
                ("protocol.https.allow", "always"),
                ("protocol.ssh.allow", "always"),
                # Local repositories only where enabled, and then only named
                # by the agent itself ("user"): never by a submodule.
                ("protocol.file.allow", "user" if self.local_root else "never"),
            ),
        }

    def _askpass(self) -> Path:
        """The program git asks for the credential: it answers from git's own
        environment (the secret is never written down), in the agent's HOME."""
        path = self.home / "askpass"
        if not path.exists():
            aside = self.home / f".askpass-{os.getpid()}"
            aside.write_text(ASKPASS)
            aside.chmod(0o700)
            aside.replace(path)
        return path

    def check(self, repository: str) -> None:
        """RepositoryRefused unless this agent may clone `repository`."""
        try:
            parsed = parse(repository)
        except ValueError as exc:
            raise RepositoryRefused(f"repository {repository[:200]!r} {exc}") from exc
        if not parsed.local:
            return
        if self.local_root is None:
            raise RepositoryRefused(
                f"repository {repository[:200]!r}: local repositories are not enabled for this agent"
            )
        # The path as written, and where it really leads (a symlink on the way).
        written = is_under(parsed, local_segments(str(self.local_root)))
        try:
            real_root = local_segments(os.path.realpath(self.local_root))
            real = is_under(parse(os.path.realpath(parsed.path)), real_root)
        except ValueError:
            real = False
        if not (written and real):
            raise RepositoryRefused(
                f"repository {repository[:200]!r}: this agent's local repositories "
                f"are under {self.local_root}/"
            )


def _config(*pairs: tuple[str, str]) -> dict[str, str]:
    """git configuration in the environment (GIT_CONFIG_COUNT): it outranks
    every configuration file, the repository's own included, and reaches
    the git processes git itself starts (submodules)."""
    env = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for i, (key, value) in enumerate(pairs):
        env |= {f"GIT_CONFIG_KEY_{i}": key, f"GIT_CONFIG_VALUE_{i}": value}
    return env


def _git(policy: GitPolicy, cwd: Path | None, *args: str, author: Author | None = None) -> str:
    env = policy.environment()
    if author is not None:
        env |= {
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": author.name,
            "GIT_COMMITTER_EMAIL": author.email,
        }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise GitError(f"git {args[0]}: {(done.stderr or done.stdout).strip()[:2000]}")
    return done.stdout.strip()


def safe_path(root: Path, relative: str) -> Path:
    """`relative` inside `root`, or ValueError: no absolute paths, no `..`, no `.git`."""
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or "\\" in relative or "\x00" in relative:
        raise ValueError(f"file path {relative!r} must be relative to the repository root")
    if any(part in ("..", ".git") for part in pure.parts):
        raise ValueError(f"file path {relative!r} must stay inside the work tree and out of .git")
    return root.joinpath(*pure.parts)


def _open_below(root: Path, parts: tuple[str, ...]) -> int:
    """A descriptor for writing `root/parts...`, made without following a
    symlink at any component: directories are created and entered one by one
    (O_NOFOLLOW), and the file itself is opened O_NOFOLLOW."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=fd)
    finally:
        os.close(fd)


def init_repository(path: Path, files: Mapping[str, str], author: Author, branch: str = "main") -> str:
    """A bare repository at `path` whose `branch` holds `files` (a demo
    project's or a test's starting point); returns the commit."""
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        policy = GitPolicy(Path(tmp) / "home", local_root=path.resolve().parent)
        _git(policy, path, "init", "--bare", "--quiet", f"--initial-branch={branch}")
        ws = Workspace.init(Path(tmp) / "seed", branch, policy)
        ws.write_files(files)
        commit = ws.commit("Initial commit", author)
        ws.git("push", "--quiet", "--end-of-options", str(path.resolve()), f"{branch}:{branch}")
    return commit


@dataclass
class Workspace:
    path: Path
    policy: GitPolicy

    @classmethod
    def init(cls, path: Path, branch: str, policy: GitPolicy) -> Workspace:
        path.mkdir(parents=True, exist_ok=True)
        _git(policy, path, "init", "--quiet", f"--initial-branch={branch}")
        return cls(path, policy)

    @classmethod
    def clone(cls, url: str, path: Path, policy: GitPolicy) -> Workspace:
        """`url` cloned into `path` if `policy` allows it; a local one through
        git's transport (--no-local: no hard links into, or copies of, the
        source's object directory)."""
        policy.check(url)
        _git(policy, None, "clone", "--quiet", "--no-tags", "--no-local", "--", url, str(path))
        return cls(path, policy)

    def git(self, *args: str, author: Author | None = None) -> str:
        out = _git(self.policy, self.path, *args, author=author)
        stopping.advanced()  # a step of the ticket's work (the heartbeat reports them)
        return out

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def start_branch(self, name: str, base: str) -> None:
        """A new local branch `name` from `origin/<base>` (or the remote's
        `name` when it exists already, so a retried ticket continues it)."""
        check_branch(name)
        check_branch(base)
        remote = self.git("ls-remote", "--heads", "--end-of-options", "origin", name)
        if remote:
            self.git("fetch", "--quiet", "--end-of-options", "origin", f"{name}:refs/remotes/origin/{name}")
            self.git("checkout", "--quiet", "-B", name, f"origin/{name}")
        else:
            self.git("checkout", "--quiet", "-B", name, f"origin/{base}")

    def write_files(self, files: Mapping[str, str]) -> list[str]:
        """Write (create or replace) files; returns the paths written."""
        written = []
        for relative, content in files.items():
            if len(content.encode()) > MAX_FILE_BYTES:
                raise ValueError(f"file {relative!r} is larger than {MAX_FILE_BYTES} bytes")
            target = safe_path(self.path, relative)
            try:
                fd = _open_below(self.path, target.relative_to(self.path).parts)
            except OSError as exc:  # ELOOP / ENOTDIR: a symlink (or a file) on the way
                raise ValueError(
                    f"file path {relative!r} goes through a symlink or a file: {exc.strerror}"
                ) from exc
            with os.fdopen(fd, "w") as f:
                f.write(content)
            written.append(relative)
        return written

    def commit(self, message: str, author: Author) -> str:
        """Commit everything in the tree; with nothing changed, HEAD stays."""
        self.git("add", "--all")
        if not self.git("status", "--porcelain"):
            return self.head() if self.git("rev-parse", "--verify", "--quiet", "HEAD") else ""
        self.git("commit", "--quiet", "-m", message, author=author)
        return self.head()

    def push(self, branch: str) -> None:
        check_branch(branch)
        self.git("push", "--quiet", "--end-of-options", "origin", f"{branch}:{branch}")

    def diff(self, base: str, head: str) -> str:
        """What `head` changes relative to where it left `base`."""
        check_branch(base)
        check_branch(head)
        self.git("fetch", "--quiet", "--end-of-options", "origin", base, head)
        return self.git("diff", "--end-of-options", f"origin/{base}...origin/{head}")

    def changed_files(self, base: str, head: str) -> list[str]:
        check_branch(base)
        check_branch(head)
        out = self.git("diff", "--name-only", "--end-of-options", f"origin/{base}...origin/{head}")
        return [line for line in out.splitlines() if line]

    def merge(self, branch: str, into: str, message: str, author: Author, attempts: int = 5) -> str:
        """Merge `branch` into `into` and push it; retried when another merge
        landed first (the push is rejected as non-fast-forward). Returns the
        merge commit; GitError when the branches conflict."""
        check_branch(branch)
        check_branch(into)
        last: GitError | None = None
        for _ in range(attempts):
            self.git("fetch", "--quiet", "--end-of-options", "origin", into, branch)
            self.git("checkout", "--quiet", "-B", into, f"origin/{into}")
            try:
                self.git(
                    "merge",
                    "--no-ff",
                    "--quiet",
                    "-m",
                    message,
                    "--end-of-options",
                    f"origin/{branch}",
                    author=author,
                )
            except GitError:
                self.git("merge", "--abort")
                raise
            try:
                self.git("push", "--quiet", "--end-of-options", "origin", f"{into}:{into}")
                return self.head()
            except GitError as exc:  # someone else pushed `into` meanwhile: merge again on top
                last = exc
        raise last or GitError("merge: gave up")
