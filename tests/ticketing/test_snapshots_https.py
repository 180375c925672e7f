"""Snapshots and rollback of a private repository over HTTPS: ticketing reads
the base branch and force-pushes it back with the tenant's stored credential
(a real git server behind TLS that wants a password, on 127.0.0.1); without
a credential that works, no snapshot is taken and the branch is untouched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from swarm.ticketing.v1 import snapshots_pb2 as spb
from swarm.ticketing.v1 import snapshots_pb2_grpc as spb_grpc
from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmagent.gitops import Author, init_repository
from tests.support.githttps import GitHttps, git_https
from tests.support.gitwork import git, push_commit
from tests.support.harness import BACKENDS, TicketingHarness, start_ticketing
from tests.support.status import raises_status
from tests.support.ticketing import spec, tenant

pytestmark = BACKENDS
USER, SECRET = "x-access-token", "s3cret-for-rollbacks"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHttps]:
    with git_https(tmp_path / "server", USER, SECRET) as s:
        for name in ("acme/app.git", "acme/locked.git"):
            init_repository(s.root / name, {"README.md": "# app\n"}, Author("T", "t@example.invalid"))
        monkeypatch.setenv("GIT_SSL_CAINFO", str(s.ca_file))  # the operator's CA for the git host
        for proxy in ("HTTPS_PROXY", "https_proxy"):
            monkeypatch.delenv(proxy, raising=False)
        yield s


@pytest.fixture
def ticketing_https(db: str, server: GitHttps, tmp_path: Path) -> Iterator[tuple[TicketingHarness, str]]:
    t = tenant()
    host = f"127.0.0.1:{server.port}"
    store = tmp_path / "git-credentials.json"
    store.write_text(
        json.dumps(
            [
                {
                    "tenant_id": t,
                    "repository_prefix": f"{host}/acme/app.git",
                    "username": USER,
                    "password": SECRET,
                },
                {
                    "tenant_id": t,
                    "repository_prefix": f"{host}/acme/locked.git",
                    "username": USER,
                    "password": "x",
                },
            ]
        )
    )
    h = start_ticketing(db, repository_prefixes=f"{t}={host}/", git_credentials_file=str(store))
    try:
        yield h, t
    finally:
        h.stop()


def test_a_private_https_repository_is_rolled_back_with_the_tenants_credential(
    server: GitHttps, ticketing_https: tuple[TicketingHarness, str], tmp_path: Path
) -> None:
    h, t = ticketing_https
    snaps = spb_grpc.SnapshotServiceStub(h.channel)
    made = h.stub.CreateProject(
        pb.CreateProjectRequest(
            tenant_id=t, name="p", tickets=[spec("a")], repository=server.url("acme/app.git")
        )
    )
    pid = made.project.id
    (pre,) = snaps.ListSnapshots(spb.ListSnapshotsRequest(tenant_id=t, project_id=pid)).snapshots
    original = git(server.root / "acme/app.git", "rev-parse", "refs/heads/main")
    assert (pre.snapshot_type, pre.commit_sha) == (spb.SNAPSHOT_TYPE_PRE_DESIGN, original)
    assert USER in server.attempts, "read over https with the stored credential"

    bad = push_commit(server.root / "acme/app.git", tmp_path / "work-app")
    plan = snaps.PlanRollback(spb.PlanRollbackRequest(tenant_id=t, project_id=pid, snapshot_id=pre.id)).plan
    assert plan.head_commit == bad and [c.commit_sha for c in plan.leaving_commits] == [bad]
    done = snaps.Rollback(
        spb.RollbackRequest(
            tenant_id=t, project_id=pid, snapshot_id=pre.id, expected_head=plan.head_commit, actor="ops@acme"
        )
    ).rollback
    assert done.state == spb.ROLLBACK_STATE_DONE and done.previous_head == bad
    assert git(server.root / "acme/app.git", "rev-parse", "refs/heads/main") == original
    assert set(server.attempts) <= {"", USER}, "no other credential was ever presented"


def test_a_credential_the_host_refuses_takes_no_snapshot_and_changes_nothing(
    server: GitHttps, ticketing_https: tuple[TicketingHarness, str], tmp_path: Path
) -> None:
    h, t = ticketing_https
    snaps = spb_grpc.SnapshotServiceStub(h.channel)
    made = h.stub.CreateProject(
        pb.CreateProjectRequest(
            tenant_id=t, name="p", tickets=[spec("a")], repository=server.url("acme/locked.git")
        )
    )
    pid = made.project.id
    bad = push_commit(server.root / "acme/locked.git", tmp_path / "work-locked")
    # The host refuses the stored credential: no snapshot can be taken (nor a
    # pre_design one), so there is nothing to roll back to.
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "git"):
        snaps.CreateSnapshot(spb.CreateSnapshotRequest(tenant_id=t, project_id=pid, created_by="ops@acme"))
    assert list(snaps.ListSnapshots(spb.ListSnapshotsRequest(tenant_id=t, project_id=pid)).snapshots) == []
    assert set(server.attempts) >= {USER}, "the stored credential was presented and refused"
    assert git(server.root / "acme/locked.git", "rev-parse", "refs/heads/main") == bad
    ticket = h.stub.GetTicket(pb.GetTicketRequest(tenant_id=t, ticket_id=made.tickets[0].id)).ticket
    assert ticket.state == pb.TICKET_STATE_READY, "nothing was cancelled"
    assert list(snaps.ListRollbacks(spb.ListRollbacksRequest(tenant_id=t, project_id=pid)).rollbacks) == []
