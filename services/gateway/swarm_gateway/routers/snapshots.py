"""A project's snapshots and rollback (seed §10), backed by ticketing's
SnapshotService. The tenant comes from the API key: another tenant's project
is 404; a project that names no repository is 409."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from swarm.ticketing.v1 import snapshots_pb2 as spb
from swarm_gateway.deps import BackendsDep, CurrentCaller, Paging, RequestId
from swarm_gateway.errors import COMMON_ERRORS
from swarm_gateway.models import UUID_PATTERN
from swarm_gateway.snapshot_models import (
    ProjectAuditEventPage,
    ProjectAuditEventPublic,
    RollbackCreate,
    RollbackPage,
    RollbackPlanPublic,
    RollbackPublic,
    SnapshotCreate,
    SnapshotPage,
    SnapshotPublic,
)

router = APIRouter(prefix="/api", tags=["snapshots"], responses=COMMON_ERRORS)

ProjectId = Annotated[str, Path(pattern=UUID_PATTERN)]
SnapshotId = Annotated[str, Path(pattern=UUID_PATTERN)]


@router.get("/projects/{project_id}/snapshots", response_model=SnapshotPage)
def list_snapshots(
    project_id: ProjectId, caller: CurrentCaller, b: BackendsDep, page: Paging
) -> SnapshotPage:
    """Newest first. The pre_design snapshot appears once the repository could be read."""
    reply = b.ticketing.snapshots.ListSnapshots(
        spb.ListSnapshotsRequest(
            tenant_id=caller.tenant_id, project_id=project_id, page_size=page.size, page_token=page.token
        )
    )
    return SnapshotPage(
        items=[SnapshotPublic.from_proto(s) for s in reply.snapshots], next_page_token=reply.next_page_token
    )


@router.post(
    "/projects/{project_id}/snapshots", status_code=status.HTTP_201_CREATED, response_model=SnapshotPublic
)
def create_snapshot(
    project_id: ProjectId, body: SnapshotCreate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> SnapshotPublic:
    """A manual snapshot of the base branch's head."""
    reply = b.ticketing.snapshots.CreateSnapshot(
        spb.CreateSnapshotRequest(
            tenant_id=caller.tenant_id,
            project_id=project_id,
            description=body.description,
            created_by=f"api-key:{caller.api_key_id}",
            request_id=request_id,
        )
    )
    return SnapshotPublic.from_proto(reply.snapshot)


@router.get("/projects/{project_id}/snapshots/{snapshot_id}/plan", response_model=RollbackPlanPublic)
def plan_rollback(
    project_id: ProjectId, snapshot_id: SnapshotId, caller: CurrentCaller, b: BackendsDep
) -> RollbackPlanPublic:
    """What a rollback to the snapshot would do now: tickets cancelled, merge
    requests closed, commits leaving (and, rolling forward, returning)."""
    reply = b.ticketing.snapshots.PlanRollback(
        spb.PlanRollbackRequest(tenant_id=caller.tenant_id, project_id=project_id, snapshot_id=snapshot_id)
    )
    return RollbackPlanPublic.from_proto(reply.plan)


@router.post("/projects/{project_id}/rollback", response_model=RollbackPublic)
def rollback(
    project_id: ProjectId, body: RollbackCreate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> RollbackPublic:
    """Reset the base branch to the snapshot (after a pre_rollback snapshot,
    cancelling the work in flight and closing open merge requests). Retrying
    an interrupted rollback (same Idempotency-Key, or the same snapshot)
    resumes it."""
    reply = b.ticketing.snapshots.Rollback(
        spb.RollbackRequest(
            tenant_id=caller.tenant_id,
            project_id=project_id,
            snapshot_id=body.snapshot_id,
            expected_head=body.expected_head,
            actor=f"api-key:{caller.api_key_id}",
            request_id=request_id,
        )
    )
    return RollbackPublic.from_proto(reply.rollback)


@router.get("/projects/{project_id}/rollbacks", response_model=RollbackPage)
def list_rollbacks(
    project_id: ProjectId, caller: CurrentCaller, b: BackendsDep, page: Paging
) -> RollbackPage:
    """The project's rollbacks, newest first: each step's time, what was
    cancelled and closed, the head the force-push discarded."""
    reply = b.ticketing.snapshots.ListRollbacks(
        spb.ListRollbacksRequest(
            tenant_id=caller.tenant_id, project_id=project_id, page_size=page.size, page_token=page.token
        )
    )
    return RollbackPage(
        items=[RollbackPublic.from_proto(r) for r in reply.rollbacks], next_page_token=reply.next_page_token
    )


@router.get("/projects/{project_id}/audit", response_model=ProjectAuditEventPage)
def list_project_audit(
    project_id: ProjectId, caller: CurrentCaller, b: BackendsDep, page: Paging
) -> ProjectAuditEventPage:
    """The project's own audit trail (the seed's `project_rollback` entries, ...), newest first."""
    reply = b.ticketing.snapshots.ListProjectAuditEvents(
        spb.ListProjectAuditEventsRequest(
            tenant_id=caller.tenant_id, project_id=project_id, page_size=page.size, page_token=page.token
        )
    )
    return ProjectAuditEventPage(
        items=[ProjectAuditEventPublic.from_proto(e) for e in reply.events],
        next_page_token=reply.next_page_token,
    )
