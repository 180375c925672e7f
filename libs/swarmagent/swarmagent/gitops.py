"""The git work an agent does in its workspace: clone the project's
repository, branch, write files, commit, push, and (for reviewers) merge.

Plain `git` through subprocess: the agent needs exactly what the CLI does
(any URL git understands, its credential helpers, its merge machinery).
File paths come from an LLM and are untrusted: they must stay inside the
work tree and out of `.git`, and are written without following a symlink at
any component (the tenant's repository may hold `docs -> /`). Branch names
come from other agents' results: each is checked (swarmcommon.gitnames) and
passed after `--end-of-options`, so none is ever read as an option. git runs
without the host's or the user's configuration.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from swarmcommon.gitnames import check_branch

MAX_FILE_BYTES = 512 * 1024


class GitError(Exception):
    """A git command failed; the message carries git's own words."""


@dataclass(frozen=True)
class Author:
    name: str
    email: str


def _git(cwd: Path | None, *args: str, author: Author | None = None) -> str:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
        # No ~/.gitconfig or /etc/gitconfig: no credential helpers, hooks
        # paths or aliases of whoever runs the guest.
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
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
    project's starting point); returns the commit."""
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "--bare", "--quiet", f"--initial-branch={branch}")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.init(Path(tmp) / "seed", branch)
        ws.write_files(files)
        commit = ws.commit("Initial commit", author)
        ws.git("push", "--quiet", str(path.resolve()), f"{branch}:{branch}")
    return commit


@dataclass
class Workspace:
    path: Path

    @classmethod
    def init(cls, path: Path, branch: str) -> Workspace:
        path.mkdir(parents=True, exist_ok=True)
        _git(path, "init", "--quiet", f"--initial-branch={branch}")
        return cls(path)

    @classmethod
    def clone(cls, url: str, path: Path) -> Workspace:
        _git(None, "clone", "--quiet", "--no-tags", url, str(path))
        return cls(path)

    def git(self, *args: str, author: Author | None = None) -> str:
        return _git(self.path, *args, author=author)

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
