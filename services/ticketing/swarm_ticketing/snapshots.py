"""Project snapshots and rollback (seed §10): the types, and the checkpoint
taken as merges land.

A snapshot is a commit of the project's base branch, recorded by type:
- `pre_design`: the branch before any of the project's work merged. Taken
  lazily, outside project creation (whose transaction must not wait on, or
  fail with, a git server): the first time the project's snapshots are
  listed, planned against, rolled back or a manual one is taken. It is the
  head then if nothing of the project has merged yet, else the first parent
  of the project's first merge commit — the same commit either way,
  whenever it is taken. A repository that cannot be read leaves it for the
  next time (logged), and the listing goes on without it.
- `checkpoint`: every `checkpoint_every` merged merge requests of the
  project (SWARM_TICKETING_CHECKPOINT_EVERY), in the merge's own
  transaction and without git: the reviewer's merge commit is the new head.
- `manual`: CreateSnapshot, the head read from the repository.
- `pre_rollback`: the head a rollback discards (rolling back to it rolls
  forward); the rollback keeps it reachable under refs/swarm/snapshots/.

A rollback (stores/rollbacks.py) cancels the tickets whose work is built on
the head it discards: those holding a lease (assigned, in progress) and
those with an open merge request, with every unfinished ticket depending
on them (they could never run). Ready and blocked tickets without one stay:
they start from the base branch as the rollback leaves it.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from swarm_ticketing.domain import MergeRequestState
from swarm_ticketing.snapshot_tables import project_snapshots
from swarm_ticketing.tables import merge_requests, projects
from swarmcommon.gitnames import commit_problem

S = project_snapshots
DEFAULT_CHECKPOINT_EVERY = 5


class SnapshotType(enum.StrEnum):
    PRE_DESIGN = "pre_design"
    CHECKPOINT = "checkpoint"
    MANUAL = "manual"
    PRE_ROLLBACK = "pre_rollback"


class RollbackState(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"


# The steps of a rollback, in order, each with its column of project_rollbacks.
STEPS = ("snapshot_taken", "tickets_cancelled", "merge_requests_closed", "branch_reset", "audited")
MR_CLOSED_WHY = "Closed due to project rollback"


@dataclass(frozen=True)
class Snapshot:
    id: str
    tenant_id: str
    project_id: str
    snapshot_type: SnapshotType
    branch: str
    commit_sha: str
    description: str
    created_by: str
    created_at: datetime


def to_snapshot(row: Row[Any]) -> Snapshot:
    m = row._mapping
    return Snapshot(
        id=m["id"],
        tenant_id=m["tenant_id"],
        project_id=m["project_id"],
        snapshot_type=SnapshotType(m["snapshot_type"]),
        branch=m["branch"],
        commit_sha=m["commit_sha"],
        description=m["description"],
        created_by=m["created_by"],
        created_at=m["created_at"],
    )


def insert(
    conn: Connection,
    project: Row[Any],
    kind: SnapshotType,
    commit: str,
    now: datetime,
    *,
    description: str,
    created_by: str,
    merged_count: int | None = None,
) -> Snapshot:
    snapshot_id = str(uuid.uuid4())
    conn.execute(
        sa.insert(S).values(
            id=snapshot_id,
            tenant_id=project.tenant_id,
            project_id=project.id,
            snapshot_type=kind.value,
            branch=project.base_branch,
            commit_sha=commit,
            description=description,
            created_by=created_by,
            merged_count=merged_count,
            created_at=now,
        )
    )
    return to_snapshot(conn.execute(sa.select(S).where(S.c.id == snapshot_id)).one())


class Checkpoints:
    """How often a checkpoint is taken; set once from the settings at start
    (`server.start`), read by `after_merge` deep in the merge path."""

    every = DEFAULT_CHECKPOINT_EVERY


def after_merge(conn: Connection, row: Any, now: datetime) -> Snapshot | None:
    """After ticket `row`'s merge request became merged (same transaction):
    a checkpoint at its merge commit when the project's merged count is a
    multiple of `Checkpoints.every` (0: never). Idempotent: a second call for
    the same count takes none."""
    every = Checkpoints.every
    project = conn.execute(sa.select(projects).where(projects.c.id == row.project_id)).first()
    if every <= 0 or project is None or not project.repository:
        return None
    m = merge_requests
    merged = m.c.state == MergeRequestState.MERGED.value
    # By tenant first: ix_merge_requests_tenant narrows the count to the tenant's merge requests.
    of_project = sa.and_(m.c.tenant_id == project.tenant_id, m.c.project_id == project.id)
    count = conn.execute(sa.select(sa.func.count()).select_from(m).where(of_project, merged)).scalar_one()
    if count == 0 or count % every:
        return None
    mine = conn.execute(
        sa.select(m.c.merge_commit).where(m.c.ticket_id == row.id, merged).order_by(m.c.updated_at.desc())
    ).first()
    commit = mine.merge_commit if mine is not None else None
    if not commit or commit_problem(commit) is not None:
        return None
    taken = conn.execute(
        sa.select(S.c.id).where(
            S.c.project_id == project.id,
            S.c.snapshot_type == SnapshotType.CHECKPOINT.value,
            S.c.merged_count == count,
        )
    ).first()
    if taken is not None:
        return None
    return insert(
        conn,
        project,
        SnapshotType.CHECKPOINT,
        commit,
        now,
        description=f"After {count} merged tickets",
        created_by="system",
        merged_count=count,
    )
