"""Per-ticket git credentials: ticketing hands the claimant of a ticket the
credential its operator stored for that tenant and repository, and the
agent's git answers the server's prompts with it through GIT_ASKPASS.

A real HTTPS git server that wants a password (git http-backend behind TLS
on 127.0.0.1) stands in for a private repository host: without the
credential the clone is refused, with it the agent clones and pushes, and
the secret is in no URL, file or git configuration. Another tenant's ticket
on the same host gets nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing.config import Settings
from swarmagent.client import ClaimedTicket
from swarmagent.gitops import Author, GitError, GitPolicy, RepositoryRefused, Workspace, init_repository
from swarmagent.runtime import Runtime
from tests.support.githttps import GitHttps, git_https
from tests.support.harness import BACKENDS, start_ticketing
from tests.support.ticketing import claim, spec, tenant

ME = Author("Test Agent", "agent@example.invalid")
USER, SECRET = "x-access-token", "s3cret-token-for-acme"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHttps]:
    with git_https(tmp_path / "server", USER, SECRET) as s:
        init_repository(s.root / "acme" / "app.git", {"README.md": "# app\n"}, ME)
        monkeypatch.setenv("GIT_SSL_CAINFO", str(s.ca_file))  # the test CA, as an operator's would be
        for proxy in ("HTTPS_PROXY", "https_proxy"):
            monkeypatch.delenv(proxy, raising=False)
        yield s


def _clone(server: GitHttps, tmp_path: Path, policy: GitPolicy, name: str = "ws") -> Workspace:
    return Workspace.clone(server.url("acme/app.git"), tmp_path / name, policy)


def test_without_the_credential_a_private_repository_is_refused(server: GitHttps, tmp_path: Path) -> None:
    with pytest.raises(GitError, match="(?i)authentication|could not read Username|401"):
        _clone(server, tmp_path, GitPolicy(tmp_path / "home"))
    assert set(server.attempts) == {""}  # git presented nothing (no host credentials to find)
    with pytest.raises(GitError):
        wrong = GitPolicy(tmp_path / "home").with_credential(server.url("acme/app.git"), USER, "wrong")
        _clone(server, tmp_path, wrong, "ws2")
    assert USER in server.attempts


def test_with_the_credential_the_agent_clones_and_pushes_and_writes_the_secret_nowhere(
    server: GitHttps, tmp_path: Path
) -> None:
    policy = GitPolicy(tmp_path / "home").with_credential(server.url("acme/app.git"), USER, SECRET)
    assert SECRET not in repr(policy)
    ws = _clone(server, tmp_path, policy)
    ws.start_branch("swarm/feature", "main")
    ws.write_files({"src/app.py": "print('hi')\n"})
    ws.commit("Add app", ME)
    ws.push("swarm/feature")
    pushed = subprocess.run(
        ["git", "--git-dir", str(server.root / "acme" / "app.git"), "log", "--format=%s", "swarm/feature"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert pushed.splitlines()[0] == "Add app"
    # The secret lives only in git's environment: not in the remote URL, the
    # repository's configuration, git's home (the askpass program included).
    written = [p for root in (tmp_path / "ws", tmp_path / "home") for p in root.rglob("*") if p.is_file()]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes()]
    assert ws.git("remote", "get-url", "origin").strip() == server.url("acme/app.git")


@BACKENDS
def test_ticketing_hands_the_claimant_its_tenants_credential_and_the_runtime_uses_it(
    server: GitHttps, tmp_path: Path, db: str
) -> None:
    a, b = tenant(), tenant()
    host = f"127.0.0.1:{server.port}"
    store = tmp_path / "git-credentials.json"
    store.write_text(
        json.dumps(
            [
                {"tenant_id": a, "repository_prefix": f"{host}/acme/", "username": USER, "password": SECRET},
                # A narrower entry elsewhere, and another tenant's on a sibling path.
                {"tenant_id": a, "repository_prefix": f"{host}/other/", "username": "o", "password": "o"},
                {"tenant_id": b, "repository_prefix": f"{host}/acme-b/", "username": "b", "password": "b"},
            ]
        )
    )
    h = start_ticketing(db, repository_prefixes=f"{a}={host}/;{b}={host}/", git_credentials_file=str(store))
    try:
        repository = server.url("acme/app.git")
        for t in (a, b):
            h.stub.CreateProject(
                pb.CreateProjectRequest(tenant_id=t, name="p", tickets=[spec("x")], repository=repository)
            )
        mine, theirs = claim(h.stub, a, "agent-a"), claim(h.stub, b, "agent-b")
    finally:
        h.stop()
    # Tenant a's claimant gets a's credential for this repository, valid as long as its lease.
    assert mine.HasField("git_credential")
    assert (mine.git_credential.username, mine.git_credential.password) == (USER, SECRET)
    assert mine.git_credential.expire_time == mine.lease.expire_time
    # Tenant b names the same repository, but the store holds nothing of b's for it.
    assert theirs.ticket.id and not theirs.HasField("git_credential")

    # The runtime clones with it; without it (tenant b's claim) the clone fails.
    git = GitPolicy(tmp_path / "git-home")
    runtime = Runtime(None, "", "main", tmp_path / "work", ME, "m", git)  # type: ignore[arg-type]
    claimed = ClaimedTicket(mine.ticket, mine.lease, mine.stage, mine.git_credential)
    ws = runtime._clone(repository, tmp_path / "a", claimed)
    assert (ws.path / "README.md").read_text() == "# app\n"
    assert runtime.git.credential is None  # the next ticket starts without it
    with pytest.raises(GitError):
        runtime._clone(repository, tmp_path / "b", ClaimedTicket(theirs.ticket, theirs.lease, theirs.stage))


def test_a_bad_credentials_file_stops_ticketing_naming_the_entry(tmp_path: Path) -> None:
    store = tmp_path / "creds.json"
    store.write_text(json.dumps([{"tenant_id": "a", "repository_prefix": "github.com/a/", "username": "u"}]))
    with pytest.raises(ValidationError, match="entry 0: password must be a non-empty string"):
        Settings(database_url="sqlite://", git_credentials_file=str(store))
    store.write_text(json.dumps({"tenant_id": "a"}))
    with pytest.raises(ValidationError, match="expected a JSON list"):
        Settings(database_url="sqlite://", git_credentials_file=str(store))


def test_the_credential_is_answered_only_to_its_repositorys_host(tmp_path: Path) -> None:
    """What git would ask after a redirect to another host (or for any other
    URL the repository steers it to) gets nothing; over anything but https
    no credential is ever set up."""
    repository = "https://git.example.test/acme/app.git"
    policy = GitPolicy(tmp_path / "home").with_credential(repository, USER, SECRET)
    env = policy.environment()

    def ask(prompt: str) -> subprocess.CompletedProcess[str]:
        asked = [env["GIT_ASKPASS"], prompt]
        return subprocess.run(asked, env=env, capture_output=True, text=True, check=False)

    assert ask("Username for 'https://git.example.test': ").stdout == f"{USER}\n"
    assert ask(f"Password for 'https://{USER}@git.example.test': ").stdout == f"{SECRET}\n"
    for prompt in (
        "Username for 'https://attacker.example': ",
        f"Password for 'https://{USER}@attacker.example': ",
        f"Password for 'https://{USER}@git.example.test.attacker.example': ",
        "Password for 'https://someone@git.example.test': ",
    ):
        answer = ask(prompt)
        assert answer.returncode != 0 and SECRET not in answer.stdout and USER not in answer.stdout, prompt
    for repository in ("ssh://git@git.example.test/acme/app.git", "/srv/git/acme/app.git"):
        with pytest.raises(RepositoryRefused):
            GitPolicy(tmp_path / "home").with_credential(repository, USER, SECRET)


@BACKENDS
def test_a_replayed_claim_gets_no_credential_once_its_lease_is_gone(tmp_path: Path, db: str) -> None:
    """An agent whose lease expired and moved to another agent replays its
    old ClaimTicket (same request id): the replay answers with the old claim,
    but the repository's credential belongs to the lease holder only."""
    a = tenant()
    store = tmp_path / "git-credentials.json"
    entry = {"tenant_id": a, "repository_prefix": "git.example.test/acme/"}
    store.write_text(json.dumps([{**entry, "username": USER, "password": SECRET}]))
    h = start_ticketing(db, repository_prefixes=f"{a}=git.example.test/", git_credentials_file=str(store))
    try:
        repository = "https://git.example.test/acme/app.git"
        h.stub.CreateProject(
            pb.CreateProjectRequest(tenant_id=a, name="p", tickets=[spec("x")], repository=repository)
        )
        first = claim(h.stub, a, "agent-1", request_id="r-1")
        assert first.git_credential.password == SECRET
        again = claim(h.stub, a, "agent-1", request_id="r-1")  # a retry while it holds the lease
        assert again.git_credential.password == SECRET
        h.clock.advance(timedelta(minutes=16))  # the lease expires (15 minutes by default) ...
        stale = claim(h.stub, a, "agent-1", request_id="r-1")
        assert stale.ticket.id == first.ticket.id and not stale.HasField("git_credential")
        taken = claim(h.stub, a, "agent-2")  # ... and goes to another agent
        assert taken.ticket.id == first.ticket.id and taken.git_credential.password == SECRET
        replay = claim(h.stub, a, "agent-1", request_id="r-1")
        assert replay.lease.claim_token == first.lease.claim_token and not replay.HasField("git_credential")
    finally:
        h.stop()
