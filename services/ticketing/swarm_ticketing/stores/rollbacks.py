"""Rolling a project back to a snapshot: a recorded, resumable sequence.

1. snapshot_taken: the head is read and must be the plan's (`expected_head`,
   else BRANCH_MOVED and nothing written); one transaction takes the
   pre_rollback snapshot of it and records the rollback (its request_id too).
2. merge_requests_closed + tickets_cancelled, one transaction: the
   project's open merge requests closed ("Closed due to project rollback"),
   then the tickets `stores.snapshots.to_cancel` names cancelled with
   `cancel_in` (leases revoked, audited, `ticket.cancelled`).
3. branch_reset: the force-push (`PlatformGit.reset`, leased on the head
   read in 1, which it keeps under refs/swarm/snapshots/<pre_rollback id>);
   a branch already at the target counts as reset (a crash after the push).
   Recorded with the previous head.
4. audited: the seed's audit entry (project_audit_events: ticketing's
   audit_events is per ticket) and `project.rolled_back`; the rollback is done.

Each step looks at its own column first, so calling Rollback again (the
same request_id, or any Rollback to the same snapshot while one is
unfinished) resumes where the last attempt stopped and does nothing twice.
A project has at most one unfinished rollback.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from swarm_ticketing.domain import ActorType
from swarm_ticketing.platform_git import BranchMoved, PlatformGit
from swarm_ticketing.snapshot_tables import project_audit_events, project_rollbacks, project_snapshots
from swarm_ticketing.snapshots import MR_CLOSED_WHY, STEPS, RollbackState, SnapshotType, insert
from swarm_ticketing.stores import journal, merge_requests
from swarm_ticketing.stores.cancels import cancel_in
from swarm_ticketing.stores.snapshots import (
    Snapshots,
    open_merge_requests,
    project_row,
    snapshot_row,
    to_cancel,
)
from swarmcommon import validation as v
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition, InvalidArgument, SwarmError
from swarmcommon.gitnames import commit_problem
from swarmcommon.idempotency import RequestKey, reused
from swarmcommon.outbox import OutboxEvent

R, S = project_rollbacks, project_snapshots
EVENT = "project.rolled_back"


@dataclass(frozen=True)
class ProjectRollback:
    id: str
    project_id: str
    snapshot_id: str
    branch: str
    target_commit: str
    pre_snapshot_id: str
    previous_head: str | None
    state: RollbackState
    cancelled_ticket_ids: list[str]
    closed_merge_request_ids: list[str]
    actor: str
    last_error: str | None
    done_at: dict[str, datetime | None]
    created_at: datetime


def to_rollback(row: Row[Any]) -> ProjectRollback:
    m = row._mapping
    return ProjectRollback(
        id=m["id"],
        project_id=m["project_id"],
        snapshot_id=m["snapshot_id"],
        branch=m["branch"],
        target_commit=m["target_commit"],
        pre_snapshot_id=m["pre_snapshot_id"],
        previous_head=m["previous_head"],
        state=RollbackState(m["state"]),
        cancelled_ticket_ids=json.loads(m["cancelled_ticket_ids"] or "[]"),
        closed_merge_request_ids=json.loads(m["closed_merge_request_ids"] or "[]"),
        actor=m["actor"],
        last_error=m["last_error"],
        done_at={step: m[f"{step}_at"] for step in STEPS},
        created_at=m["created_at"],
    )


class Rollbacks:
    def __init__(self, db: Database, clock: Clock, git: PlatformGit, snapshots: Snapshots) -> None:
        self.db = db
        self.clock = clock
        self.git = git
        self.snapshots = snapshots

    def rollback(
        self,
        tenant_id: str,
        project_id: str,
        snapshot_id: str,
        expected_head: str,
        actor: str,
        key: RequestKey | None,
    ) -> ProjectRollback:
        project_id = v.uuid_id("project_id", project_id)
        snapshot_id = v.uuid_id("snapshot_id", snapshot_id)
        if commit_problem(expected_head) is not None:
            raise InvalidArgument(
                "expected_head", "must be the plan's head_commit, a full lowercase hex commit id"
            )
        actor = v.required_text("actor", actor, 128)
        row = self._resumable(tenant_id, project_id, snapshot_id, key)
        if row is None:
            row = self._start(tenant_id, project_id, snapshot_id, expected_head, actor, key)
        return self._resume(row)

    # -- finding or starting one ---------------------------------------------------------------

    def _resumable(
        self, tenant_id: str, project_id: str, snapshot_id: str, key: RequestKey | None
    ) -> Row[Any] | None:
        def read(conn: Connection) -> Row[Any] | None:
            if key is not None:
                mine = conn.execute(
                    sa.select(R).where(R.c.tenant_id == tenant_id, R.c.request_id == key.request_id)
                ).first()
                if mine is not None:
                    if mine.fingerprint != key.fingerprint:
                        raise reused(key.operation, key.request_id)
                    return mine
            project = project_row(conn, tenant_id, project_id)
            running = conn.execute(
                sa.select(R).where(
                    R.c.tenant_id == tenant_id,
                    R.c.project_id == project.id,
                    R.c.state == RollbackState.RUNNING.value,
                )
            ).first()
            if running is None:
                return None
            if running.snapshot_id != snapshot_id:
                raise FailedPrecondition(
                    f"rollback {running.id} of project {project_id} to snapshot {running.snapshot_id} "
                    "is unfinished; Rollback to that snapshot resumes it",
                    reason="ROLLBACK_UNFINISHED",
                    rollback_id=running.id,
                )
            return running

        return self.db.transaction(read, write=False)

    def _start(
        self,
        tenant_id: str,
        project_id: str,
        snapshot_id: str,
        expected_head: str,
        actor: str,
        key: RequestKey | None,
    ) -> Row[Any]:
        project = self.db.transaction(lambda conn: project_row(conn, tenant_id, project_id), write=False)
        self.git.remote(tenant_id, project.repository)  # FAILED_PRECONDITION before anything else
        self.db.transaction(lambda conn: snapshot_row(conn, project, snapshot_id), write=False)
        self.snapshots.ensure_pre_design(project)
        head = self.git.head(tenant_id, project.repository, project.base_branch)
        if head != expected_head:
            raise BranchMoved(
                f"branch {project.base_branch} is at {head[:12]}, not at the expected head "
                f"{expected_head[:12]}: it moved since the plan; plan again",
                head=head,
                expected_head=expected_head,
            )

        def tx(conn: Connection) -> Row[Any]:
            now = self.clock.now()
            target = snapshot_row(conn, project, snapshot_id)
            if conn.execute(
                sa.select(R.c.id).where(
                    R.c.project_id == project.id, R.c.state == RollbackState.RUNNING.value
                )
            ).first():
                raise FailedPrecondition(
                    f"project {project_id} has an unfinished rollback; retry", reason="ROLLBACK_UNFINISHED"
                )
            pre = insert(
                conn,
                project,
                SnapshotType.PRE_ROLLBACK,
                head,
                now,
                description=f"Before rollback to {target.snapshot_type} snapshot {target.commit_sha[:7]}",
                created_by=actor,
            )
            rollback_id = str(uuid.uuid4())
            conn.execute(
                sa.insert(R).values(
                    id=rollback_id,
                    tenant_id=tenant_id,
                    project_id=project.id,
                    snapshot_id=target.id,
                    branch=project.base_branch,
                    target_commit=target.commit_sha,
                    expected_head=head,
                    pre_snapshot_id=pre.id,
                    state=RollbackState.RUNNING.value,
                    actor=actor,
                    request_id=key.request_id if key else None,
                    fingerprint=key.fingerprint if key else None,
                    snapshot_taken_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            return conn.execute(sa.select(R).where(R.c.id == rollback_id)).one()

        try:
            return self.db.transaction(tx)
        except IntegrityError:  # a concurrent duplicate (same request_id) recorded it first
            again = self._resumable(tenant_id, project_id, snapshot_id, key)
            if again is None:
                raise
            return again

    # -- the steps -------------------------------------------------------------------------------

    def _step(self, rollback_id: str, fn: Callable[[Connection, Row[Any], datetime], dict[str, Any]]) -> None:
        """Run one step in a transaction with the rollback row locked; `fn`
        returns the columns to record (nothing when the step was done)."""

        def tx(conn: Connection) -> None:
            row = conn.execute(sa.select(R).where(R.c.id == rollback_id).with_for_update()).one()
            now = self.clock.now()
            values = fn(conn, row, now)
            if values:
                conn.execute(sa.update(R).where(R.c.id == rollback_id).values(**values, updated_at=now))

        self.db.transaction(tx)

    def _resume(self, row: Row[Any]) -> ProjectRollback:
        self._step(row.id, self._stop_work)
        if row.branch_reset_at is None:
            try:
                self._reset(row)
            except SwarmError as exc:
                message = exc.message[:2000]
                self._step(row.id, lambda conn, r, now: {"last_error": message})
                raise
        self._step(row.id, self._audit)
        return self.db.transaction(
            lambda conn: to_rollback(conn.execute(sa.select(R).where(R.c.id == row.id)).one()), write=False
        )

    @staticmethod
    def _stop_work(conn: Connection, row: Row[Any], now: datetime) -> dict[str, Any]:
        if row.tickets_cancelled_at is not None:
            return {}
        # Chosen first: a ticket is chosen for its open merge request, closed next.
        chosen = to_cancel(conn, row.tenant_id, row.project_id)
        closing = open_merge_requests(conn, row.tenant_id, row.project_id)
        merge_requests.close_for(conn, sorted({m.ticket_id for m in closing}), MR_CLOSED_WHY, now)
        cancelled = cancel_in(
            conn,
            row.tenant_id,
            chosen,
            now,
            actor=ActorType.SYSTEM,
            actor_id=row.actor,
            reason=f"project rollback to snapshot {row.snapshot_id}",
        )
        return {
            "closed_merge_request_ids": json.dumps([m.id for m in closing]),
            "cancelled_ticket_ids": json.dumps([t.id for t in cancelled]),
            "merge_requests_closed_at": now,
            "tickets_cancelled_at": now,
        }

    def _reset(self, row: Row[Any]) -> None:
        project = self.db.transaction(
            lambda conn: project_row(conn, row.tenant_id, row.project_id), write=False
        )
        head = self.git.head(row.tenant_id, project.repository, row.branch)
        if head != row.target_commit:  # else: pushed before a crash, or nothing to move
            self.git.reset(
                row.tenant_id,
                project.repository,
                row.branch,
                row.target_commit,
                row.expected_head,
                row.pre_snapshot_id,
            )
        self._step(
            row.id,
            lambda conn, r, now: (
                {}
                if r.branch_reset_at is not None
                else {"previous_head": r.expected_head, "branch_reset_at": now, "last_error": None}
            ),
        )

    @staticmethod
    def _audit(conn: Connection, row: Row[Any], now: datetime) -> dict[str, Any]:
        if row.audited_at is not None:
            return {}
        snapshot = conn.execute(sa.select(S).where(S.c.id == row.snapshot_id)).one()
        details = {
            "project_id": row.project_id,
            "snapshot_id": snapshot.id,
            "commit_sha": snapshot.commit_sha,
        }
        rationale = f"Rolled back to {snapshot.snapshot_type} snapshot from {snapshot.created_at.isoformat()}"
        conn.execute(
            sa.insert(project_audit_events).values(
                id=str(uuid.uuid4()),
                tenant_id=row.tenant_id,
                project_id=row.project_id,
                event_type="project_rollback",
                actor_type=ActorType.HUMAN.value,
                actor_id=row.actor,
                details=json.dumps(details),
                rationale=rationale,
                created_at=now,
            )
        )
        event = details | {
            "rollback_id": row.id,
            "branch": row.branch,
            "previous_head": row.previous_head,
            "pre_rollback_snapshot_id": row.pre_snapshot_id,
            "cancelled_ticket_ids": json.loads(row.cancelled_ticket_ids or "[]"),
            "closed_merge_request_ids": json.loads(row.closed_merge_request_ids or "[]"),
            "by": row.actor,
        }
        journal.record(conn, now, [], [OutboxEvent(row.tenant_id, EVENT, event)])
        return {"audited_at": now, "state": RollbackState.DONE.value}
