"""The git the platform itself runs on a project's repository: read the base
branch's head, list the commits between two snapshots, force-push the base
branch back (snapshots and rollback, `swarm_ticketing.snapshots`).

It runs in ticketing's own process, with its file system and network, on a
repository a tenant named. So, as agents' git (swarmagent.gitops):
- only the project's own repository, checked again here: a local one only
  under `local_repository_root/<tenant>/`, the path as written and where it
  really leads (a symlink to another tenant's repository is refused); https
  with the tenant's credential (gitcredentials) as an HTTP header scoped to
  the repository's origin, never in a URL, an argument or a log; ssh is not
  supported (the platform holds no ssh key) and is FAILED_PRECONDITION;
- an environment built from scratch (no HOME, global or system config, no
  terminal prompt), only the file or https transport, no redirects;
- no hooks anywhere: core.hooksPath=/dev/null for every git run here, and
  for the receive-pack a local push starts in the tenant's repository (git
  drops the environment's configuration there, so it is given on that
  command line), so its pre-receive/post-receive hooks do not run in this
  process;
- branch names checked (swarmcommon.gitnames), commits full hex ids, and
  every ref after `--end-of-options`.

Reads fetch into a temporary bare repository; a reset is one atomic push:
the branch to the target with `--force-with-lease=<branch>:<expected>` (a
head that moved is refused, BRANCH_MOVED), and the discarded head kept
reachable under `refs/swarm/snapshots/<snapshot id>` so rolling forward
to it can fetch it again.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from swarm_ticketing.gitcredentials import CredentialStore, GitSecret
from swarm_ticketing.repositories import RepositoryPolicy
from swarmcommon.errors import FailedPrecondition, SwarmError
from swarmcommon.gitnames import check_branch, commit_problem
from swarmcommon.gitrepos import Repository, is_under, local_segments, parse

KEEP_PREFIX = "refs/swarm/snapshots/"
TIMEOUT_SECONDS = 120
_FIELD, _RECORD = "\x1f", "\x1e"
# From ticketing's environment, what git still needs: the egress proxy and CA bundle.
_PASSED = ("PATH", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "SSL_CERT_FILE", "GIT_SSL_CAINFO")


class GitFailed(FailedPrecondition):
    """git could not do it (the message carries git's own words)."""

    reason = "GIT_FAILED"


class BranchMoved(FailedPrecondition):
    reason = "BRANCH_MOVED"


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    trailer_tickets: tuple[str, ...]
    parents: tuple[str, ...]


@dataclass(frozen=True)
class Remote:
    """A project's repository as git is to reach it."""

    url: str
    local: bool
    secret: GitSecret | None = field(default=None, repr=False)
    origin: str = ""


def _commit(sha: str, what: str) -> str:
    if commit_problem(sha) is not None:
        raise FailedPrecondition(f"{what} {sha[:80]!r} is not a full commit id", reason="BAD_COMMIT")
    return sha


def _branch(name: str) -> str:
    try:
        return check_branch(name)
    except ValueError as exc:
        raise FailedPrecondition(f"base_branch: {exc}", reason="BAD_BRANCH") from None


class PlatformGit:
    def __init__(self, policy: RepositoryPolicy, credentials: CredentialStore) -> None:
        self.policy = policy
        self.credentials = credentials

    # -- where ---------------------------------------------------------------------------------

    def remote(self, tenant_id: str, repository: str) -> Remote:
        """The project's repository, if the platform may and can reach it."""
        if not repository:
            raise FailedPrecondition(
                "the project names no git repository: it has no snapshots to take or roll back to",
                reason="NO_REPOSITORY",
            )
        try:
            parsed = parse(repository)
        except ValueError as exc:
            raise FailedPrecondition(f"repository: {exc}", reason="REPOSITORY_NOT_ALLOWED") from None
        if parsed.local:
            return Remote(self._local(tenant_id, parsed), local=True)
        if parsed.scheme != "https":
            raise FailedPrecondition(
                f"repository: the platform reads and resets only https:// and local repositories, "
                f"not {parsed.scheme} ({parsed.host}{parsed.path[:200]})",
                reason="REPOSITORY_NOT_SUPPORTED",
            )
        self.policy.check(tenant_id, repository)  # still allowed for this tenant?
        origin = f"https://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")
        url = origin + parsed.path
        return Remote(url, False, self.credentials.for_repository(tenant_id, repository), origin)

    def _local(self, tenant_id: str, parsed: Repository) -> str:
        root = self.policy.local_root
        refused = FailedPrecondition(
            f"repository: the platform reaches local repositories only under "
            f"{root or '(local repositories are not enabled)'}/{tenant_id}/ (got {parsed.path[:200]})",
            reason="REPOSITORY_NOT_ALLOWED",
        )
        if not root:
            raise refused
        written = is_under(parsed, local_segments(root) + (tenant_id,))
        try:  # where it really leads: a symlink on the way to another tenant's repository
            real = is_under(
                parse(os.path.realpath(parsed.path)), local_segments(os.path.realpath(root)) + (tenant_id,)
            )
        except ValueError:
            real = False
        if not (written and real):
            raise refused
        return os.path.realpath(parsed.path)

    # -- running git -----------------------------------------------------------------------------

    def _environment(self, remote: Remote, home: Path) -> dict[str, str]:
        config: list[tuple[str, str]] = [
            ("core.hooksPath", os.devnull),
            ("protocol.allow", "never"),
            ("protocol.file.allow", "always" if remote.local else "never"),
            ("protocol.https.allow", "never" if remote.local else "always"),
            ("http.followRedirects", "false"),
            ("credential.helper", ""),
        ]
        if remote.secret is not None:  # scoped to the repository's origin, never in a URL
            token = base64.b64encode(f"{remote.secret.username}:{remote.secret.password}".encode()).decode()
            config.append((f"http.{remote.origin}/.extraHeader", f"Authorization: Basic {token}"))
        env = {key: os.environ[key] for key in _PASSED if key in os.environ}
        env |= {
            "HOME": str(home),
            "LC_ALL": "C",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_COMMITTER_NAME": "swarm-platform",
            "GIT_COMMITTER_EMAIL": "platform@swarm.invalid",
            "GIT_CONFIG_COUNT": str(len(config)),
        }
        for i, (key, value) in enumerate(config):
            env |= {f"GIT_CONFIG_KEY_{i}": key, f"GIT_CONFIG_VALUE_{i}": value}
        return env

    def _run(self, remote: Remote, workdir: Path, *args: str) -> str:
        home = workdir / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        cwd = workdir / "repo.git"
        done = subprocess.run(
            ["git", "-c", f"core.hooksPath={os.devnull}", *args],
            cwd=cwd if cwd.exists() else workdir,
            env=self._environment(remote, home),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
        if done.returncode != 0:
            raise GitFailed(f"git {args[0]}: {(done.stderr or done.stdout).strip()[:1000]}")
        return done.stdout

    def _fetched(self, remote: Remote, workdir: Path, branch: str) -> None:
        """The branch and every kept snapshot head, in a bare repository in `workdir`."""
        self._run(remote, workdir, "init", "--bare", "--quiet", "repo.git")
        self._run(
            remote,
            workdir,
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-recurse-submodules",
            "--end-of-options",
            remote.url,
            f"+refs/heads/{branch}:refs/heads/{branch}",
            f"+{KEEP_PREFIX}*:{KEEP_PREFIX}*",
        )

    # -- what the service asks -----------------------------------------------------------------

    def head(self, tenant_id: str, repository: str, branch: str) -> str:
        """The branch's head commit in the project's repository."""
        remote, branch = self.remote(tenant_id, repository), _branch(branch)
        with tempfile.TemporaryDirectory(prefix="swarm-git-") as tmp:
            out = self._run(
                remote, Path(tmp), "ls-remote", "--end-of-options", remote.url, f"refs/heads/{branch}"
            )
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref == f"refs/heads/{branch}":
                return _commit(sha, "head")
        raise FailedPrecondition(
            f"branch {branch} is not in the project's repository", reason="NO_BRANCH", branch=branch
        )

    def between(
        self, tenant_id: str, repository: str, branch: str, head: str, target: str
    ) -> tuple[list[Commit], list[Commit]]:
        """(commits on `head` not on `target`, commits on `target` not on `head`), newest first."""
        remote, branch = self.remote(tenant_id, repository), _branch(branch)
        head, target = _commit(head, "head"), _commit(target, "snapshot commit")
        with tempfile.TemporaryDirectory(prefix="swarm-git-") as tmp:
            self._fetched(remote, Path(tmp), branch)
            self._present(remote, Path(tmp), target)
            return self._log(remote, Path(tmp), head, target), self._log(remote, Path(tmp), target, head)

    def first_parent(self, tenant_id: str, repository: str, branch: str, commit: str) -> str | None:
        """`commit`'s first parent, when the repository still holds it."""
        remote, branch = self.remote(tenant_id, repository), _branch(branch)
        with tempfile.TemporaryDirectory(prefix="swarm-git-") as tmp:
            self._fetched(remote, Path(tmp), branch)
            self._present(remote, Path(tmp), _commit(commit, "merge commit"))
            out = self._run(remote, Path(tmp), "rev-list", "--parents", "-n", "1", "--end-of-options", commit)
        parents = out.split()[1:]
        return parents[0] if parents else None

    def reset(
        self, tenant_id: str, repository: str, branch: str, target: str, expected: str, keep_as: str
    ) -> None:
        """Force the branch from `expected` to `target`, keeping `expected` under
        refs/swarm/snapshots/`keep_as`; BranchMoved when the head is not `expected`."""
        remote, branch = self.remote(tenant_id, repository), _branch(branch)
        target, expected = _commit(target, "snapshot commit"), _commit(expected, "expected head")
        keep = f"{KEEP_PREFIX}{check_branch(keep_as)}"
        with tempfile.TemporaryDirectory(prefix="swarm-git-") as tmp:
            self._fetched(remote, Path(tmp), branch)
            now = self._run(
                remote, Path(tmp), "rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}"
            ).strip()
            if now != expected:
                raise _moved(branch, now, expected)
            self._present(remote, Path(tmp), target)
            try:
                self._run(
                    remote,
                    Path(tmp),
                    "push",
                    "--quiet",
                    "--atomic",
                    "--no-verify",
                    # A local push runs receive-pack in the tenant's repository,
                    # where git drops our environment's configuration: its hooks
                    # would run in this process. Command-line -c outranks its config.
                    f"--receive-pack=git -c core.hooksPath={os.devnull} receive-pack",
                    f"--force-with-lease=refs/heads/{branch}:{expected}",
                    "--end-of-options",
                    remote.url,
                    f"{target}:refs/heads/{branch}",
                    f"{expected}:{keep}",
                )
            except SwarmError:
                now = self.head(tenant_id, repository, branch)
                if now != expected:
                    raise _moved(branch, now, expected) from None
                raise

    def _present(self, remote: Remote, workdir: Path, commit: str) -> None:
        try:
            self._run(remote, workdir, "cat-file", "-e", f"{commit}^{{commit}}")
        except GitFailed:
            raise FailedPrecondition(
                f"commit {commit[:12]} is no longer reachable in the project's repository",
                reason="COMMIT_GONE",
                commit=commit,
            ) from None

    def _log(self, remote: Remote, workdir: Path, tip: str, base: str) -> list[Commit]:
        fmt = f"%H{_FIELD}%P{_FIELD}%s{_FIELD}%(trailers:key=Swarm-Ticket,valueonly,separator=%x2C){_RECORD}"
        out = self._run(remote, workdir, "log", f"--format={fmt}", "--end-of-options", tip, f"^{base}")
        return [_parse(record) for record in out.split(_RECORD) if record.strip()]


def _moved(branch: str, now: str, expected: str) -> BranchMoved:
    return BranchMoved(
        f"branch {branch} is at {now[:12]}, not at the expected head {expected[:12]}: "
        "it moved since the plan; plan again",
        head=now,
        expected_head=expected,
    )


def _parse(record: str) -> Commit:
    sha, parents, subject, trailers = (record.strip("\n").split(_FIELD) + ["", "", ""])[:4]
    tickets = tuple(t.strip() for t in trailers.split(",") if t.strip())
    return Commit(sha.strip(), subject[:300], tickets, tuple(parents.split()))


def tickets_of(commits: Sequence[Commit]) -> set[str]:
    return {t for c in commits for t in c.trailer_tickets}
