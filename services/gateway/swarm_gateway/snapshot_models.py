"""REST resources for project snapshots and rollback (seed §10)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from swarm.ticketing.v1 import snapshots_pb2 as spb
from swarm_gateway.enums import TICKET_STATE
from swarm_gateway.models import UUID_PATTERN, Request, Text, ts
from swarmcommon.enums import ProtoNames

SNAPSHOT_TYPE = ProtoNames(spb.SnapshotType)
ROLLBACK_STATE = ProtoNames(spb.RollbackState)
COMMIT_PATTERN = r"^([0-9a-f]{40}|[0-9a-f]{64})$"
STEPS = ("snapshot_taken", "tickets_cancelled", "merge_requests_closed", "branch_reset", "audited")


class SnapshotCreate(Request):
    description: Text = Field(default="", max_length=1000)


class RollbackCreate(Request):
    snapshot_id: Annotated[str, Field(pattern=UUID_PATTERN)]
    expected_head: Annotated[
        str,
        Field(
            pattern=COMMIT_PATTERN,
            description="The plan's head_commit: a branch that moved since is refused (409, BRANCH_MOVED)",
        ),
    ]


class SnapshotPublic(BaseModel):
    id: str
    project_id: str
    snapshot_type: str
    branch: str
    commit_sha: str
    description: str
    created_by: str
    created_at: datetime | None

    @classmethod
    def from_proto(cls, s: spb.Snapshot) -> SnapshotPublic:
        return cls(
            id=s.id,
            project_id=s.project_id,
            snapshot_type=SNAPSHOT_TYPE.name(s.snapshot_type),
            branch=s.branch,
            commit_sha=s.commit_sha,
            description=s.description,
            created_by=s.created_by,
            created_at=ts(s.create_time, s.HasField("create_time")),
        )


class SnapshotPage(BaseModel):
    items: list[SnapshotPublic]
    next_page_token: str


class PlannedTicketPublic(BaseModel):
    ticket_id: str
    name: str
    state: str


class PlannedMergeRequestPublic(BaseModel):
    merge_request_id: str
    ticket_id: str
    branch: str


class PlannedCommitPublic(BaseModel):
    commit_sha: str
    subject: str
    ticket_id: str | None


def _commits(commits: list[spb.PlannedCommit]) -> list[PlannedCommitPublic]:
    return [
        PlannedCommitPublic(commit_sha=c.commit_sha, subject=c.subject, ticket_id=c.ticket_id or None)
        for c in commits
    ]


class RollbackPlanPublic(BaseModel):
    snapshot: SnapshotPublic
    head_commit: str = Field(description="Send it back as expected_head")
    tickets_to_cancel: list[PlannedTicketPublic]
    merge_requests_to_close: list[PlannedMergeRequestPublic]
    leaving_commits: list[PlannedCommitPublic]
    returning_commits: list[PlannedCommitPublic]

    @classmethod
    def from_proto(cls, p: spb.RollbackPlan) -> RollbackPlanPublic:
        return cls(
            snapshot=SnapshotPublic.from_proto(p.snapshot),
            head_commit=p.head_commit,
            tickets_to_cancel=[
                PlannedTicketPublic(ticket_id=t.ticket_id, name=t.name, state=TICKET_STATE.name(t.state))
                for t in p.tickets_to_cancel
            ],
            merge_requests_to_close=[
                PlannedMergeRequestPublic(
                    merge_request_id=m.merge_request_id, ticket_id=m.ticket_id, branch=m.branch
                )
                for m in p.merge_requests_to_close
            ],
            leaving_commits=_commits(list(p.leaving_commits)),
            returning_commits=_commits(list(p.returning_commits)),
        )


class RollbackPublic(BaseModel):
    id: str
    project_id: str
    snapshot_id: str
    branch: str
    target_commit: str
    pre_rollback_snapshot_id: str
    previous_head: str | None
    state: str
    cancelled_ticket_ids: list[str]
    closed_merge_request_ids: list[str]
    actor: str
    last_error: str | None
    steps_done_at: dict[str, datetime | None]
    created_at: datetime | None

    @classmethod
    def from_proto(cls, r: spb.ProjectRollback) -> RollbackPublic:
        return cls(
            id=r.id,
            project_id=r.project_id,
            snapshot_id=r.snapshot_id,
            branch=r.branch,
            target_commit=r.target_commit,
            pre_rollback_snapshot_id=r.pre_rollback_snapshot_id,
            previous_head=r.previous_head or None,
            state=ROLLBACK_STATE.name(r.state),
            cancelled_ticket_ids=list(r.cancelled_ticket_ids),
            closed_merge_request_ids=list(r.closed_merge_request_ids),
            actor=r.actor,
            last_error=r.last_error or None,
            steps_done_at={
                step: ts(getattr(r, f"{step}_time"), r.HasField(f"{step}_time"))
                for step in STEPS  # type: ignore[arg-type]
            },
            created_at=ts(r.create_time, r.HasField("create_time")),
        )


class RollbackPage(BaseModel):
    items: list[RollbackPublic]
    next_page_token: str


class ProjectAuditEventPublic(BaseModel):
    id: str
    project_id: str
    event_type: str
    actor_type: str
    actor_id: str | None
    details: dict[str, Any]
    rationale: str | None
    created_at: datetime | None

    @classmethod
    def from_proto(cls, e: spb.ProjectAuditEvent) -> ProjectAuditEventPublic:
        return cls(
            id=e.id,
            project_id=e.project_id,
            event_type=e.event_type,
            actor_type=e.actor_type,
            actor_id=e.actor_id or None,
            details=json.loads(e.details_json or "{}"),
            rationale=e.rationale or None,
            created_at=ts(e.create_time, e.HasField("create_time")),
        )


class ProjectAuditEventPage(BaseModel):
    items: list[ProjectAuditEventPublic]
    next_page_token: str
