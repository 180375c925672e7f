"""The platform's own git reaches only the project's own repository and runs
nothing of the tenant's: a symlink from tenant A's directory to tenant B's
repository is refused (A's project could be created naming it: the creation
check reads the path as written), the repository's hooks do not run when
the platform pushes, and a branch that reads as an option never reaches git."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from swarm.ticketing.v1 import snapshots_pb2 as spb
from swarm_ticketing.gitcredentials import FileCredentials
from swarm_ticketing.platform_git import PlatformGit
from swarm_ticketing.repositories import RepositoryPolicy
from swarmcommon.errors import FailedPrecondition
from tests.support.status import raises_status
from tests.support.ticketing import snapshot, spec, tenant
from tests.ticketing.test_snapshots import BACKENDS, Env, env, listed, make_repo, plan, project, rollback

__all__ = ["env"]


@BACKENDS
def test_a_symlink_to_another_tenants_repository_is_refused(env: Env) -> None:
    a, b = tenant(), tenant()
    theirs = make_repo(env.root, b)
    (env.root / a).mkdir()
    os.symlink(theirs.bare, env.root / a / "borrowed.git")
    made = project(env, a, str(env.root / a / "borrowed.git"), [spec("x")])
    pid = made.project.id
    assert listed(env, a, pid) == [], "nothing read from B's repository, not even a pre_design"
    before, head = snapshot(env.h), theirs.head()
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, f"only under {env.root}/{a}/"):
        env.snaps.CreateSnapshot(spb.CreateSnapshotRequest(tenant_id=a, project_id=pid, created_by="x"))
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, f"only under {env.root}/{a}/"):
        plan(env, a, pid, "00000000-0000-4000-8000-000000000000")
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, f"only under {env.root}/{a}/"):
        rollback(env, a, pid, "00000000-0000-4000-8000-000000000000", head)
    assert snapshot(env.h) == before and theirs.head() == head


@BACKENDS
def test_the_repositorys_hooks_do_not_run_when_the_platform_pushes(env: Env, tmp_path: Path) -> None:
    t = tenant()
    repo = make_repo(env.root, t)
    marker = tmp_path / "hook-ran"
    for hook in ("pre-receive", "update", "post-receive", "post-update", "reference-transaction"):
        path = repo.bare / "hooks" / hook
        path.write_text(f"#!/bin/sh\necho {hook} >> {marker}\n")
        path.chmod(0o755)
    made = project(env, t, str(repo.bare), [spec("x")])
    (pre_design,) = listed(env, t, made.project.id)
    marker.unlink(missing_ok=True)  # the test's own push ran them: that is what hooks do
    repo.commit("late", made.tickets[0].id)
    marker.unlink(missing_ok=True)
    p = plan(env, t, made.project.id, pre_design.id)
    done = rollback(env, t, made.project.id, pre_design.id, p.head_commit)
    assert done.state == spb.ROLLBACK_STATE_DONE and repo.head() == pre_design.commit_sha
    assert not marker.exists(), f"a hook ran in ticketing's process: {marker.read_text()}"


@pytest.mark.parametrize(
    ("repository", "branch", "fragment"),
    [
        pytest.param("{root}/acme/app.git", "--upload-pack=touch {pwned}", "base_branch", id="branch-option"),
        pytest.param("{root}/acme/app.git", "-c", "base_branch", id="branch-dash"),
        pytest.param("{root}/beta/app.git", "main", "only under", id="other-tenant-path"),
        pytest.param("{root}/acme/../beta/app.git", "main", "segments", id="dot-dot"),
        pytest.param("ssh://git@git.example.test/acme/app.git", "main", "not ssh", id="ssh"),
        pytest.param("ext::sh -c touch {pwned}", "main", "repository", id="ext-transport"),
        pytest.param("", "main", "names no git repository", id="none"),
    ],
)
def test_the_platform_git_refuses_what_is_not_the_projects_own(
    tmp_path: Path, repository: str, branch: str, fragment: str
) -> None:
    root, pwned = tmp_path / "repos", tmp_path / "pwned"
    make_repo(root, "acme")
    make_repo(root, "beta")
    git = PlatformGit(RepositoryPolicy.from_settings("", str(root)), FileCredentials())
    with pytest.raises(FailedPrecondition, match=fragment):
        git.head("acme", repository.format(root=root, pwned=pwned), branch.format(pwned=pwned))
    assert not pwned.exists()
    assert git.head("acme", str(root / "acme" / "app.git"), "main")  # its own is fine
