"""Snapshots and rollback over real gRPC on a real local git repository, both
backends: the plan names exactly the tickets, merge requests and commits; the
rollback cancels the work in flight (a late submit is refused), closes the
open merge requests, force-pushes the branch back and records the previous
head; rolling forward restores it; a crash midway resumes to the same end
state with nothing done twice; a moved head and bad inputs write nothing."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from swarm.ticketing.v1 import snapshots_pb2 as spb
from swarm.ticketing.v1 import snapshots_pb2_grpc as spb_grpc
from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing import snapshots
from swarm_ticketing.platform_git import GitFailed, PlatformGit
from swarm_ticketing.snapshot_tables import project_audit_events
from swarm_ticketing.tables import tickets
from swarmagent.gitops import Author, init_repository
from tests.support.harness import BACKENDS, TicketingHarness, start_ticketing
from tests.support.status import error_info, raises_status
from tests.support.ticketing import CODER, REVIEWER, claim, outbox_events, snapshot, spec, submit, tenant

pytestmark = BACKENDS
ME = Author("Test", "test@example.invalid")
PRE_DESIGN, MANUAL, PRE_ROLLBACK = (
    spb.SNAPSHOT_TYPE_PRE_DESIGN,
    spb.SNAPSHOT_TYPE_MANUAL,
    spb.SNAPSHOT_TYPE_PRE_ROLLBACK,
)


def git(cwd: Path, *args: str) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Agent",
        "GIT_AUTHOR_EMAIL": "agent@example.invalid",
        "GIT_COMMITTER_NAME": "Agent",
        "GIT_COMMITTER_EMAIL": "agent@example.invalid",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@dataclass
class Repo:
    """A tenant's bare repository and a work tree of it, as an agent would have."""

    bare: Path
    work: Path

    def head(self, branch: str = "main") -> str:
        return git(self.bare, "rev-parse", f"refs/heads/{branch}")

    def commit(self, name: str, ticket_id: str, branch: str = "main") -> str:
        git(self.work, "checkout", "-q", "-B", branch, "origin/main" if branch != "main" else "main")
        (self.work / f"{name}.txt").write_text(name)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", f"{name}\n\nwork\n\nSwarm-Ticket: {ticket_id}")
        git(self.work, "push", "-q", "origin", f"{branch}:{branch}")
        return git(self.work, "rev-parse", "HEAD")

    def merge(self, branch: str, title: str) -> str:
        git(self.work, "checkout", "-q", "main")
        git(self.work, "merge", "-q", "--no-ff", "-m", f"Merge {branch}: {title}", branch)
        git(self.work, "push", "-q", "origin", "main:main")
        return git(self.work, "rev-parse", "HEAD")


def make_repo(root: Path, tenant_id: str, name: str = "app.git") -> Repo:
    bare = root / tenant_id / name
    init_repository(bare, {"README.md": "hello\n"}, ME)
    work = root.parent / f"work-{tenant_id}-{name}"
    git(root.parent, "clone", "-q", str(bare), str(work))
    return Repo(bare, work)


@dataclass
class Env:
    h: TicketingHarness
    snaps: spb_grpc.SnapshotServiceStub
    root: Path


@pytest.fixture
def env(db: str, tmp_path: Path) -> Iterator[Env]:
    root = tmp_path / "repos"
    root.mkdir()
    h = start_ticketing(db, local_repository_root=str(root), checkpoint_every=2)
    try:
        yield Env(h, spb_grpc.SnapshotServiceStub(h.channel), root)
    finally:
        h.stop()


def project(e: Env, t: str, repository: str, specs: list[pb.TicketSpec]) -> pb.CreateProjectResponse:
    return e.h.stub.CreateProject(
        pb.CreateProjectRequest(tenant_id=t, name="p", tickets=specs, repository=repository)
    )


def listed(e: Env, t: str, project_id: str) -> list[spb.Snapshot]:
    return list(e.snaps.ListSnapshots(spb.ListSnapshotsRequest(tenant_id=t, project_id=project_id)).snapshots)


def plan(e: Env, t: str, project_id: str, snapshot_id: str) -> spb.RollbackPlan:
    req = spb.PlanRollbackRequest(tenant_id=t, project_id=project_id, snapshot_id=snapshot_id)
    return e.snaps.PlanRollback(req).plan


def rollback(e: Env, t: str, project_id: str, snapshot_id: str, head: str, **kw: Any) -> spb.ProjectRollback:
    req = spb.RollbackRequest(
        tenant_id=t,
        project_id=project_id,
        snapshot_id=snapshot_id,
        expected_head=head,
        actor="ops@acme",
        **kw,
    )
    return e.snaps.Rollback(req).rollback


@dataclass
class Scene:
    t: str
    repo: Repo
    project_id: str
    a: str
    b: str
    c: str
    c_lease: pb.ClaimTicketResponse
    b_mr: str
    pre_design: spb.Snapshot
    manual: spb.Snapshot
    a_commit: str
    a_merge: str
    c_commit: str


def scene(e: Env) -> Scene:
    """a merged (commit + merge), a manual snapshot, then b's merge request
    open, c leased with a commit of its own on main."""
    t = tenant()
    repo = make_repo(e.root, t)
    made = project(
        e,
        t,
        str(repo.bare),
        [
            spec("a", priority=3, stages=[CODER, REVIEWER]),
            spec("b", priority=2, stages=[CODER, REVIEWER]),
            spec("c", priority=1),
        ],
    )
    a, b, c = (x.id for x in made.tickets)
    pid = made.project.id
    (pre_design,) = listed(e, t, pid)
    assert (pre_design.snapshot_type, pre_design.commit_sha) == (PRE_DESIGN, repo.head())

    e.h.clock.advance(timedelta(minutes=1))
    held = claim(e.h.stub, t, "coder-1", role=CODER)
    a_commit = repo.commit("a", a, branch="swarm/a")
    submit(e.h.stub, t, held, json.dumps({"branch": "swarm/a", "commit": a_commit}))
    review = claim(e.h.stub, t, "reviewer-1", role=REVIEWER)
    a_merge = repo.merge("swarm/a", "ticket a")
    submit(e.h.stub, t, review, json.dumps({"branch": "swarm/a", "merge_commit": a_merge}))
    req = spb.CreateSnapshotRequest(tenant_id=t, project_id=pid, description="a is in", created_by="ops@acme")
    manual = e.snaps.CreateSnapshot(req).snapshot
    e.h.clock.advance(timedelta(minutes=1))
    assert (manual.snapshot_type, manual.commit_sha) == (MANUAL, a_merge)

    held_b = claim(e.h.stub, t, "coder-2", role=CODER)
    b_commit = repo.commit("b", b, branch="swarm/b")
    submit(e.h.stub, t, held_b, json.dumps({"branch": "swarm/b", "commit": b_commit}))
    c_lease = claim(e.h.stub, t, "coder-3", role=CODER)
    assert c_lease.ticket.id == c
    c_commit = repo.commit("c", c)
    (mr,) = e.h.stub.ListMergeRequests(
        pb.ListMergeRequestsRequest(tenant_id=t, state=pb.MERGE_REQUEST_STATE_OPEN)
    ).merge_requests
    return Scene(t, repo, pid, a, b, c, c_lease, mr.id, pre_design, manual, a_commit, a_merge, c_commit)


def test_the_plan_names_exactly_what_will_happen(env: Env) -> None:
    s = scene(env)
    before = snapshot(env.h)
    p = plan(env, s.t, s.project_id, s.pre_design.id)
    assert p.head_commit == s.repo.head() == s.c_commit
    assert [(x.ticket_id, x.state) for x in p.tickets_to_cancel] == [
        (s.b, pb.TICKET_STATE_READY),
        (s.c, pb.TICKET_STATE_ASSIGNED),
    ]
    assert [(m.merge_request_id, m.ticket_id, m.branch) for m in p.merge_requests_to_close] == [
        (s.b_mr, s.b, "swarm/b")
    ]
    assert [(c.commit_sha, c.ticket_id) for c in p.leaving_commits] == [
        (s.c_commit, s.c),
        (s.a_merge, s.a),
        (s.a_commit, s.a),
    ]
    assert p.leaving_commits[1].subject == "Merge swarm/a: ticket a"
    assert list(p.returning_commits) == []
    assert snapshot(env.h) == before, "a plan writes nothing"


def test_rollback_then_roll_forward(env: Env) -> None:
    s = scene(env)
    old_head = s.repo.head()
    p = plan(env, s.t, s.project_id, s.pre_design.id)
    done = rollback(env, s.t, s.project_id, s.pre_design.id, p.head_commit, request_id="rb-1")
    assert done.state == spb.ROLLBACK_STATE_DONE and done.last_error == ""
    assert s.repo.head() == s.pre_design.commit_sha
    assert (done.previous_head, done.target_commit) == (old_head, s.pre_design.commit_sha)
    assert list(done.cancelled_ticket_ids) == [s.b, s.c]
    assert list(done.closed_merge_request_ids) == [s.b_mr]
    for step in ("snapshot_taken", "tickets_cancelled", "merge_requests_closed", "branch_reset", "audited"):
        assert done.HasField(f"{step}_time"), step

    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "cancelled"):
        submit(env.h.stub, s.t, s.c_lease)
    mr = env.h.stub.GetMergeRequest(pb.GetMergeRequestRequest(tenant_id=s.t, merge_request_id=s.b_mr))
    assert (mr.merge_request.state, mr.merge_request.review_comments) == (
        pb.MERGE_REQUEST_STATE_CLOSED,
        "Closed due to project rollback",
    )
    pre = env.snaps.GetSnapshot(
        spb.GetSnapshotRequest(
            tenant_id=s.t, project_id=s.project_id, snapshot_id=done.pre_rollback_snapshot_id
        )
    ).snapshot
    assert (pre.snapshot_type, pre.commit_sha) == (PRE_ROLLBACK, old_head)
    with env.h.app.db.engine.connect() as conn:
        (audit,) = conn.execute(sa.select(project_audit_events)).all()
    assert (audit.event_type, audit.actor_type, audit.actor_id) == ("project_rollback", "human", "ops@acme")
    assert json.loads(audit.details) == {
        "project_id": s.project_id,
        "snapshot_id": s.pre_design.id,
        "commit_sha": s.pre_design.commit_sha,
    }
    assert audit.rationale.startswith("Rolled back to pre_design snapshot from ")
    (event,) = [d for k, d in outbox_events(env.h, s.t) if k == "project.rolled_back"]
    assert event["previous_head"] == old_head
    again = rollback(env, s.t, s.project_id, s.pre_design.id, p.head_commit, request_id="rb-1")
    assert again == done, "a retry answers as the first call did"

    forward = plan(env, s.t, s.project_id, pre.id)
    assert forward.head_commit == s.pre_design.commit_sha and list(forward.leaving_commits) == []
    assert [c.commit_sha for c in forward.returning_commits] == [s.c_commit, s.a_merge, s.a_commit]
    back = rollback(env, s.t, s.project_id, pre.id, forward.head_commit)
    assert back.state == spb.ROLLBACK_STATE_DONE and s.repo.head() == old_head
    assert back.previous_head == s.pre_design.commit_sha and list(back.cancelled_ticket_ids) == []
    kinds = [x.snapshot_type for x in listed(env, s.t, s.project_id)]
    assert kinds == [PRE_ROLLBACK, PRE_ROLLBACK, MANUAL, PRE_DESIGN]

    # Both are on record for the project's owner, newest first, and for nobody else.
    history = env.snaps.ListRollbacks(spb.ListRollbacksRequest(tenant_id=s.t, project_id=s.project_id))
    assert list(history.rollbacks) == [back, done]
    one = env.snaps.ListRollbacks(
        spb.ListRollbacksRequest(tenant_id=s.t, project_id=s.project_id, page_size=1)
    )
    assert list(one.rollbacks) == [back] and one.next_page_token
    audit_req = spb.ListProjectAuditEventsRequest(tenant_id=s.t, project_id=s.project_id)
    trail = list(env.snaps.ListProjectAuditEvents(audit_req).events)
    assert [(e.event_type, e.actor_id) for e in trail] == [("project_rollback", "ops@acme")] * 2
    assert json.loads(trail[1].details_json)["snapshot_id"] == s.pre_design.id
    assert json.loads(trail[0].details_json)["snapshot_id"] == pre.id
    with raises_status(grpc.StatusCode.NOT_FOUND, s.project_id):
        env.snaps.ListRollbacks(spb.ListRollbacksRequest(tenant_id="someone-else", project_id=s.project_id))
    with raises_status(grpc.StatusCode.NOT_FOUND, s.project_id):
        env.snaps.ListProjectAuditEvents(
            spb.ListProjectAuditEventsRequest(tenant_id="someone-else", project_id=s.project_id)
        )


@pytest.mark.parametrize("after_push", [False, True], ids=["before-push", "after-push"])
def test_a_crash_midway_resumes_to_the_same_end_state(
    env: Env, monkeypatch: pytest.MonkeyPatch, after_push: bool
) -> None:
    s = scene(env)
    old_head = s.repo.head()
    real = PlatformGit.reset
    calls: list[int] = []

    def crashing(self: PlatformGit, *args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            if after_push:
                real(self, *args)
            raise GitFailed("git push: the git server went away")
        real(self, *args)

    monkeypatch.setattr(PlatformGit, "reset", crashing)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "went away"):
        rollback(env, s.t, s.project_id, s.manual.id, old_head, request_id="rb-crash")
    assert s.repo.head() == (s.manual.commit_sha if after_push else old_head)
    cancelled_once = [d for k, d in outbox_events(env.h, s.t) if k == "ticket.cancelled"]
    assert len(cancelled_once) == 2

    done = rollback(env, s.t, s.project_id, s.manual.id, old_head, request_id="rb-crash")
    assert done.state == spb.ROLLBACK_STATE_DONE and done.last_error == ""
    assert s.repo.head() == s.manual.commit_sha and done.previous_head == old_head
    assert len(calls) == (1 if after_push else 2), "a branch already reset is not pushed again"
    kinds = [k for k, _ in outbox_events(env.h, s.t)]
    assert kinds.count("ticket.cancelled") == 2 and kinds.count("pr.closed") == 1
    assert kinds.count("project.rolled_back") == 1
    with env.h.app.db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(project_audit_events)).scalar() == 1
    pre_rollbacks = [x for x in listed(env, s.t, s.project_id) if x.snapshot_type == PRE_ROLLBACK]
    assert len(pre_rollbacks) == 1


def test_a_head_that_moved_since_the_plan_is_refused(env: Env) -> None:
    s = scene(env)
    p = plan(env, s.t, s.project_id, s.pre_design.id)
    moved = s.repo.commit("late", s.c)
    before = snapshot(env.h)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "moved since the plan") as caught:
        rollback(env, s.t, s.project_id, s.pre_design.id, p.head_commit)
    assert error_info(caught[0]).reason == "BRANCH_MOVED"
    assert snapshot(env.h) == before and s.repo.head() == moved


def test_bad_inputs_write_nothing(env: Env) -> None:
    s = scene(env)
    plain = project(env, s.t, "", [spec("x")]).project.id
    head = s.repo.head()
    before = snapshot(env.h)
    unknown = "00000000-0000-4000-8000-000000000000"
    with raises_status(grpc.StatusCode.NOT_FOUND, "snapshot"):
        rollback(env, s.t, s.project_id, unknown, head)
    with raises_status(grpc.StatusCode.NOT_FOUND, "snapshot"):
        plan(env, s.t, s.project_id, unknown)
    with raises_status(grpc.StatusCode.NOT_FOUND, "project"):
        rollback(env, tenant(), s.project_id, s.pre_design.id, head)
    with raises_status(grpc.StatusCode.NOT_FOUND, "project"):
        listed(env, tenant(), s.project_id)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "names no git repository"):
        rollback(env, s.t, plain, s.pre_design.id, head)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "names no git repository"):
        env.snaps.CreateSnapshot(spb.CreateSnapshotRequest(tenant_id=s.t, project_id=plain, created_by="x"))
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "expected_head"):
        rollback(env, s.t, s.project_id, s.pre_design.id, "HEAD")
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "snapshot_id"):
        rollback(env, s.t, s.project_id, "--upload-pack=x", head)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "actor"):
        env.snaps.Rollback(
            spb.RollbackRequest(
                tenant_id=s.t, project_id=s.project_id, snapshot_id=s.pre_design.id, expected_head=head
            )
        )
    assert snapshot(env.h) == before and s.repo.head() == head
    rollback(env, s.t, s.project_id, s.manual.id, head, request_id="rb-x")
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id"):
        rollback(env, s.t, s.project_id, s.pre_design.id, s.manual.commit_sha, request_id="rb-x")


def test_a_checkpoint_every_n_merged_tickets(env: Env) -> None:
    t = tenant()
    repo = make_repo(env.root, t)
    made = project(env, t, str(repo.bare), [spec(k, stages=[CODER, REVIEWER]) for k in "abc"])
    env.h.clock.advance(timedelta(minutes=5))
    merges = []
    for n, ticket in enumerate(made.tickets):
        held = claim(env.h.stub, t, f"coder-{n}", role=CODER)
        branch = f"swarm/{held.ticket.id[:8]}"
        commit = repo.commit(f"f{n}", held.ticket.id, branch=branch)
        submit(env.h.stub, t, held, json.dumps({"branch": branch, "commit": commit}))
        review = claim(env.h.stub, t, f"reviewer-{n}", role=REVIEWER)
        merges.append(repo.merge(branch, ticket.name))
        submit(env.h.stub, t, review, json.dumps({"branch": branch, "merge_commit": merges[-1]}))
        # merge_requests.after_submit called the hook; again by hand, it takes no second checkpoint.
        env.h.app.db.transaction(
            lambda conn, i=held.ticket.id: snapshots.after_merge(
                conn, conn.execute(sa.select(tickets).where(tickets.c.id == i)).one(), env.h.clock.now()
            )
        )
    # pre_design, taken late, is still the branch before the first merge.
    before_first = git(repo.bare, "rev-parse", f"{merges[0]}^1")
    assert [(x.snapshot_type, x.commit_sha) for x in listed(env, t, made.project.id)] == [
        (spb.SNAPSHOT_TYPE_CHECKPOINT, merges[1]),
        (PRE_DESIGN, before_first),
    ]
