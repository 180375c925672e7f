"""gRPC adapter for project snapshots and rollback (SnapshotService): proto
in -> store call -> proto out."""

from __future__ import annotations

import json

import grpc

from swarm.ticketing.v1 import snapshots_pb2 as spb
from swarm.ticketing.v1 import snapshots_pb2_grpc as spb_grpc
from swarm_ticketing import wire
from swarm_ticketing.snapshots import STEPS, RollbackState, Snapshot, SnapshotType
from swarm_ticketing.stores.project_history import ProjectAuditEvent, ProjectHistory
from swarm_ticketing.stores.rollbacks import ProjectRollback, Rollbacks
from swarm_ticketing.stores.snapshots import Plan, PlannedCommit, Snapshots
from swarmcommon import validation as v
from swarmcommon.authz import Access, allow
from swarmcommon.enums import EnumCodec
from swarmcommon.idempotency import request_key
from swarmcommon.protos import timestamp

SERVICE_NAME = "swarm.ticketing.v1.SnapshotService"
_MANAGE = allow("gateway", operators=True)
ACCESS: Access = {
    name: _MANAGE
    for name in (
        "CreateSnapshot",
        "ListSnapshots",
        "GetSnapshot",
        "PlanRollback",
        "Rollback",
        "ListRollbacks",
        "ListProjectAuditEvents",
    )
}
SNAPSHOT_TYPE = EnumCodec(spb.SnapshotType, SnapshotType)
ROLLBACK_STATE = EnumCodec(spb.RollbackState, RollbackState)


def snapshot_to_proto(s: Snapshot) -> spb.Snapshot:
    return spb.Snapshot(
        id=s.id,
        project_id=s.project_id,
        snapshot_type=SNAPSHOT_TYPE.to_proto(s.snapshot_type),  # type: ignore[arg-type]
        branch=s.branch,
        commit_sha=s.commit_sha,
        description=s.description,
        created_by=s.created_by,
        create_time=timestamp(s.created_at),
    )


def _commits(commits: list[PlannedCommit]) -> list[spb.PlannedCommit]:
    return [spb.PlannedCommit(commit_sha=c.sha, subject=c.subject, ticket_id=c.ticket_id) for c in commits]


def plan_to_proto(p: Plan) -> spb.RollbackPlan:
    return spb.RollbackPlan(
        snapshot=snapshot_to_proto(p.snapshot),
        head_commit=p.head,
        tickets_to_cancel=[
            spb.PlannedTicket(
                ticket_id=t.id,
                name=t.name,
                state=wire.STATE.to_proto(t.state),  # type: ignore[arg-type]
            )
            for t in p.tickets
        ],
        merge_requests_to_close=[
            spb.PlannedMergeRequest(merge_request_id=m.id, ticket_id=m.ticket_id, branch=m.branch)
            for m in p.merge_requests
        ],
        leaving_commits=_commits(p.leaving),
        returning_commits=_commits(p.returning),
    )


def rollback_to_proto(r: ProjectRollback) -> spb.ProjectRollback:
    times = {f"{step}_time": timestamp(r.done_at[step]) for step in STEPS}
    return spb.ProjectRollback(
        id=r.id,
        project_id=r.project_id,
        snapshot_id=r.snapshot_id,
        branch=r.branch,
        target_commit=r.target_commit,
        pre_rollback_snapshot_id=r.pre_snapshot_id,
        previous_head=r.previous_head or "",
        state=ROLLBACK_STATE.to_proto(r.state),  # type: ignore[arg-type]
        cancelled_ticket_ids=r.cancelled_ticket_ids,
        closed_merge_request_ids=r.closed_merge_request_ids,
        actor=r.actor,
        last_error=r.last_error or "",
        create_time=timestamp(r.created_at),
        **times,
    )


def audit_event_to_proto(e: ProjectAuditEvent) -> spb.ProjectAuditEvent:
    return spb.ProjectAuditEvent(
        id=e.id,
        project_id=e.project_id,
        event_type=e.event_type,
        actor_type=e.actor_type,
        actor_id=e.actor_id or "",
        details_json=json.dumps(e.details, sort_keys=True),
        rationale=e.rationale or "",
        create_time=timestamp(e.created_at),
    )


class SnapshotServicer(spb_grpc.SnapshotServiceServicer):  # type: ignore[misc]
    def __init__(self, snapshots: Snapshots, rollbacks: Rollbacks, history: ProjectHistory) -> None:
        self.snapshots = snapshots
        self.rollbacks = rollbacks
        self.history = history

    def ListRollbacks(
        self, request: spb.ListRollbacksRequest, context: grpc.ServicerContext
    ) -> spb.ListRollbacksResponse:
        page = self.history.rollbacks(
            v.name_id("tenant_id", request.tenant_id),
            request.project_id,
            request.page_size,
            request.page_token,
        )
        return spb.ListRollbacksResponse(
            rollbacks=[rollback_to_proto(r) for r in page.items], next_page_token=page.next_page_token
        )

    def ListProjectAuditEvents(
        self, request: spb.ListProjectAuditEventsRequest, context: grpc.ServicerContext
    ) -> spb.ListProjectAuditEventsResponse:
        page = self.history.audit(
            v.name_id("tenant_id", request.tenant_id),
            request.project_id,
            request.page_size,
            request.page_token,
        )
        return spb.ListProjectAuditEventsResponse(
            events=[audit_event_to_proto(e) for e in page.items], next_page_token=page.next_page_token
        )

    def CreateSnapshot(
        self, request: spb.CreateSnapshotRequest, context: grpc.ServicerContext
    ) -> spb.CreateSnapshotResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        snapshot = self.snapshots.create_manual(
            tenant,
            request.project_id,
            v.bounded_text("description", request.description, 1000),
            v.required_text("created_by", request.created_by, 128),
            request_key(tenant, request),
        )
        return spb.CreateSnapshotResponse(snapshot=snapshot_to_proto(snapshot))

    def ListSnapshots(
        self, request: spb.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> spb.ListSnapshotsResponse:
        page = self.snapshots.page(
            v.name_id("tenant_id", request.tenant_id),
            request.project_id,
            request.page_size,
            request.page_token,
        )
        return spb.ListSnapshotsResponse(
            snapshots=[snapshot_to_proto(s) for s in page.items], next_page_token=page.next_page_token
        )

    def GetSnapshot(
        self, request: spb.GetSnapshotRequest, context: grpc.ServicerContext
    ) -> spb.GetSnapshotResponse:
        snapshot = self.snapshots.get(
            v.name_id("tenant_id", request.tenant_id), request.project_id, request.snapshot_id
        )
        return spb.GetSnapshotResponse(snapshot=snapshot_to_proto(snapshot))

    def PlanRollback(
        self, request: spb.PlanRollbackRequest, context: grpc.ServicerContext
    ) -> spb.PlanRollbackResponse:
        plan = self.snapshots.plan(
            v.name_id("tenant_id", request.tenant_id), request.project_id, request.snapshot_id
        )
        return spb.PlanRollbackResponse(plan=plan_to_proto(plan))

    def Rollback(self, request: spb.RollbackRequest, context: grpc.ServicerContext) -> spb.RollbackResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        rollback = self.rollbacks.rollback(
            tenant,
            request.project_id,
            request.snapshot_id,
            request.expected_head,
            request.actor,
            request_key(tenant, request),
        )
        return spb.RollbackResponse(rollback=rollback_to_proto(rollback))
