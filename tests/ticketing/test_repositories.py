"""Which repositories a tenant's projects may name: its allow-listed
prefixes, and local repositories only where enabled and only under its own
directory. Tenant B naming tenant A's repository is reproduced first (with
the check off, B's agent is handed A's repository and clones it), then
refused with nothing written."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing.config import Settings
from swarm_ticketing.repositories import REASON, RepositoryPolicy
from swarmagent.gitops import Author, GitPolicy, RepositoryRefused, Workspace, init_repository
from tests.support.harness import BACKENDS, TicketingHarness, start_ticketing
from tests.support.status import error_info, raises_status
from tests.support.ticketing import claim, snapshot, spec, tenant

pytestmark = BACKENDS
ME = Author("Test", "test@example.invalid")
ACME = "git.example.test/acme/"


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    return tmp_path / "repos"


@pytest.fixture
def ticketing(db: str, roots: Path) -> Iterator[tuple[TicketingHarness, str, str]]:
    """Ticketing with tenant a allowed git.example.test/acme/, tenant b
    nothing remote, and local repositories under `roots`/<tenant>/."""
    a, b = tenant(), tenant()
    h = start_ticketing(db, repository_prefixes=f"{a}={ACME}", local_repository_root=str(roots))
    try:
        yield h, a, b
    finally:
        h.stop()


def _create(h: TicketingHarness, tenant_id: str, repository: str) -> pb.CreateProjectResponse:
    return h.stub.CreateProject(
        pb.CreateProjectRequest(
            tenant_id=tenant_id, name="p", tickets=[spec("a")], repository=repository, base_branch="trunk"
        )
    )


def test_a_tenant_names_repositories_under_its_prefixes(ticketing: tuple[TicketingHarness, str, str]) -> None:
    h, a, _ = ticketing
    for repository in (
        "https://git.example.test/acme/webapp.git",
        "ssh://git@git.example.test/acme/team/lib.git",
        "git@git.example.test:acme/tools.git",
        "https://GIT.example.test/acme/upper-host.git",
    ):
        assert _create(h, a, repository).project.repository == repository
    c = claim(h.stub, a, "coder")
    assert (c.ticket.repository, c.ticket.base_branch) == (
        "https://git.example.test/acme/webapp.git",
        "trunk",
    )
    plain = h.stub.CreateProject(pb.CreateProjectRequest(tenant_id=a, name="p", tickets=[spec("b")]))
    assert plain.project.repository == "" and plain.project.base_branch == "main"


@pytest.mark.parametrize(
    ("repository", "code", "fragment"),
    [
        pytest.param("https://git.example.test/beta/x.git", "PERMISSION_DENIED", ACME, id="other-namespace"),
        pytest.param("https://git.example.test/acme-evil/x.git", "PERMISSION_DENIED", ACME, id="longer-name"),
        pytest.param(
            "https://git.example.test.evil.test/acme/x.git", "PERMISSION_DENIED", ACME, id="host-suffix"
        ),
        pytest.param("https://git.example.test:8443/acme/x.git", "PERMISSION_DENIED", ACME, id="other-port"),
        pytest.param("https://git.example.test/acme/../beta/x.git", "INVALID_ARGUMENT", "'..'", id="dot-dot"),
        pytest.param(
            "https://git.example.test/acme/%2e%2e/beta/x", "INVALID_ARGUMENT", "%", id="escaped-dots"
        ),
        pytest.param("https://git.example.test//acme/x.git", "INVALID_ARGUMENT", "empty", id="empty-segment"),
        pytest.param("https://u:tok@git.example.test/acme/x.git", "INVALID_ARGUMENT", "password", id="creds"),
        pytest.param("http://git.example.test/acme/x.git", "INVALID_ARGUMENT", "http://", id="http"),
        pytest.param("git://git.example.test/acme/x.git", "INVALID_ARGUMENT", "git://", id="git-protocol"),
        pytest.param("ext::sh -c touch% /tmp/x", "INVALID_ARGUMENT", "repository", id="ext"),
        pytest.param("relative/path", "INVALID_ARGUMENT", "repository", id="relative"),
        pytest.param("--upload-pack=evil", "INVALID_ARGUMENT", "repository", id="option"),
    ],
)
def test_repositories_outside_the_allow_list_are_refused_and_nothing_is_written(
    ticketing: tuple[TicketingHarness, str, str], repository: str, code: str, fragment: str
) -> None:
    h, a, _ = ticketing
    before = snapshot(h)
    with raises_status(grpc.StatusCode[code], "repository", fragment) as caught:
        _create(h, a, repository)
    if code == "PERMISSION_DENIED":
        info = error_info(caught[0])
        assert (info.reason, info.metadata["field"]) == (REASON, "repository")
    assert snapshot(h) == before


@pytest.mark.parametrize("base_branch", ["bad..branch", "-x", "a b"])
def test_a_bad_base_branch_is_refused(ticketing: tuple[TicketingHarness, str, str], base_branch: str) -> None:
    h, a, _ = ticketing
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "base_branch"):
        h.stub.CreateProject(
            pb.CreateProjectRequest(
                tenant_id=a,
                name="p",
                tickets=[spec("a")],
                repository="https://git.example.test/acme/x.git",
                base_branch=base_branch,
            )
        )


def test_a_tenant_without_prefixes_names_no_remote_repository(
    ticketing: tuple[TicketingHarness, str, str],
) -> None:
    h, _, b = ticketing
    with raises_status(grpc.StatusCode.PERMISSION_DENIED, f"tenant {b}", "ask an operator"):
        _create(h, b, "https://git.example.test/acme/webapp.git")


def _clone(url: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "clone", "--quiet", url, str(dest)], capture_output=True, text=True)


def test_tenant_b_cannot_name_tenant_as_local_repository(
    ticketing: tuple[TicketingHarness, str, str], roots: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h, a, b = ticketing
    secret = roots / a / "secret.git"
    init_repository(secret, {"SECRET.txt": f"{a}'s secret\n"}, ME)
    own = roots / b / "mine.git"
    init_repository(own, {"README.md": "# b\n"}, ME)
    denied, invalid = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT
    sneaky = (
        (str(secret), denied),
        (f"file://{secret}", denied),
        (f"{roots}/{b}/../{a}/secret.git", invalid),
        (str(roots / "shared.git"), denied),  # the root itself belongs to nobody
    )
    # The attack, with the check off (as before it existed): B's project is
    # accepted, B's agent is handed A's repository, and git clones it.
    with monkeypatch.context() as off:
        off.setattr(RepositoryPolicy, "check", lambda self, tenant_id, repository: repository)
        _create(h, b, str(secret))
        handed = claim(h.stub, b, "agent-b").ticket.repository
    assert handed == str(secret)
    assert _clone(handed, tmp_path / "stolen").returncode == 0
    assert (tmp_path / "stolen" / "SECRET.txt").read_text() == f"{a}'s secret\n"
    # And B's runtime, where local repositories are enabled for B only, refuses it too.
    with pytest.raises(RepositoryRefused):
        Workspace.clone(handed, tmp_path / "agent", GitPolicy(tmp_path / "home", local_root=roots / b))

    before = snapshot(h)
    for repository, code in sneaky:
        with raises_status(code, "repository"):
            _create(h, b, repository)
    assert snapshot(h) == before
    with raises_status(grpc.StatusCode.PERMISSION_DENIED, f"under {roots}/{b}/"):
        _create(h, b, f"file://{secret}")
    # B's own local repository is fine, as a path or a file:// URL.
    assert _create(h, b, str(own)).project.repository == str(own)
    assert _create(h, b, f"file://{own}").project.repository == f"file://{own}"


def test_local_repositories_are_refused_unless_enabled(db: str, tmp_path: Path) -> None:
    t = tenant()
    h = start_ticketing(db, repository_prefixes=f"{t}={ACME}")
    try:
        before = snapshot(h)
        for repository in (str(tmp_path / t / "x.git"), f"file://{tmp_path / t / 'x.git'}"):
            with raises_status(grpc.StatusCode.PERMISSION_DENIED, "local repositories", "not enabled"):
                _create(h, t, repository)
        assert snapshot(h) == before
    finally:
        h.stop()


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"repository_prefixes": "acme"}, id="no-equals"),
        pytest.param({"repository_prefixes": "acme=https://github.com/acme/"}, id="url-not-prefix"),
        pytest.param({"repository_prefixes": "acme=github.com/../x/"}, id="dot-dot"),
        pytest.param({"local_repository_root": "var/repos"}, id="relative-root"),
    ],
)
def test_bad_settings_stop_ticketing_from_starting(db: str, settings: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(database_url=db, **settings)  # type: ignore[arg-type]
