"""Snapshots of a project's base branch (rules in `swarm_ticketing.snapshots`):
take a manual one, list and read them, and plan a rollback to one.

Git is read outside any transaction (a slow git server holds no database
connection); what it read is written in a short transaction afterwards.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from swarm_ticketing.domain import LEASED_STATES, MergeRequest, MergeRequestState, Ticket
from swarm_ticketing.platform_git import Commit, PlatformGit
from swarm_ticketing.snapshot_tables import project_snapshots
from swarm_ticketing.snapshots import Snapshot, SnapshotType, insert, to_snapshot
from swarm_ticketing.stores import requests

# The cascade CancelTicket uses (unfinished dependents, an ensemble's attempts).
from swarm_ticketing.stores.cancels import _attempts, _dependents, _in_order
from swarm_ticketing.stores.rows import to_merge_request
from swarm_ticketing.tables import merge_requests, projects, tickets
from swarmcommon import keyset
from swarmcommon import validation as v
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import NotFound, SwarmError
from swarmcommon.idempotency import Answer, RequestKey
from swarmcommon.pagination import Page, page_size

log = logging.getLogger(__name__)
S, T, M = project_snapshots, tickets, merge_requests
_MERGE_SUBJECT = re.compile(r"Merge (\S+): ")
_UNFINISHED = ("done", "cancelled")


@dataclass(frozen=True)
class PlannedCommit:
    sha: str
    subject: str
    ticket_id: str


@dataclass(frozen=True)
class Plan:
    snapshot: Snapshot
    head: str
    tickets: list[Ticket]
    merge_requests: list[MergeRequest]
    leaving: list[PlannedCommit]
    returning: list[PlannedCommit]


def project_row(conn: Connection, tenant_id: str, project_id: str) -> Row[Any]:
    row = conn.execute(
        sa.select(projects).where(projects.c.tenant_id == tenant_id, projects.c.id == project_id)
    ).first()
    if row is None:
        raise NotFound(f"project {project_id} not found", resource_type="project", resource_name=project_id)
    return row


def snapshot_row(conn: Connection, project: Row[Any], snapshot_id: str) -> Row[Any]:
    row = conn.execute(
        sa.select(S).where(
            S.c.tenant_id == project.tenant_id, S.c.project_id == project.id, S.c.id == snapshot_id
        )
    ).first()
    if row is None:
        raise NotFound(
            f"snapshot {snapshot_id} of project {project.id} not found",
            resource_type="snapshot",
            resource_name=snapshot_id,
        )
    return row


def to_cancel(conn: Connection, tenant_id: str, project_id: str) -> list[str]:
    """The tickets a rollback cancels, in order: those holding a lease or an
    open merge request (their work is built on the head it discards), their
    ensembles' attempts, and every unfinished ticket depending on them."""
    with_open_mr = sa.select(M.c.ticket_id).where(
        M.c.project_id == project_id, M.c.state == MergeRequestState.OPEN.value
    )
    ids = [
        str(r[0])
        for r in conn.execute(
            sa.select(T.c.id)
            .where(
                T.c.tenant_id == tenant_id,
                T.c.project_id == project_id,
                T.c.state.not_in(_UNFINISHED),
                sa.or_(T.c.state.in_([s.value for s in LEASED_STATES]), T.c.id.in_(with_open_mr)),
            )
            .order_by(T.c.ordinal)
        )
    ]
    ids += [a for a in _attempts(conn, ids) if a not in ids]
    ids += [d for d in _dependents(conn, ids) if d not in ids]
    return ids


def open_merge_requests(conn: Connection, tenant_id: str, project_id: str) -> list[MergeRequest]:
    rows = conn.execute(
        sa.select(M)
        .where(
            M.c.tenant_id == tenant_id,
            M.c.project_id == project_id,
            M.c.state == MergeRequestState.OPEN.value,
        )
        .order_by(M.c.seq)
    ).all()
    return [to_merge_request(r) for r in rows]


def _owners(conn: Connection, project: Row[Any], commits: Sequence[Commit]) -> list[PlannedCommit]:
    """Each commit with the project's ticket it belongs to: its Swarm-Ticket
    trailer naming one of the project's tickets, else the merge request it
    is the commit or merge commit of, else the branch its merge subject names."""
    mine = {str(r[0]) for r in conn.execute(sa.select(T.c.id).where(T.c.project_id == project.id))}
    mrs = conn.execute(
        sa.select(M.c.ticket_id, M.c.branch, M.c.commit_sha, M.c.merge_commit).where(
            M.c.project_id == project.id
        )
    ).all()
    by_commit = {sha: mr.ticket_id for mr in mrs for sha in (mr.commit_sha, mr.merge_commit) if sha}
    by_branch = {mr.branch: mr.ticket_id for mr in mrs}
    planned = []
    for c in commits:
        owner = next((t for t in c.trailer_tickets if t in mine), "") or by_commit.get(c.sha, "")
        if not owner and (merge := _MERGE_SUBJECT.match(c.subject)):
            owner = by_branch.get(merge.group(1), "")
        planned.append(PlannedCommit(c.sha, c.subject, owner))
    return planned


class Snapshots:
    def __init__(self, db: Database, clock: Clock, git: PlatformGit) -> None:
        self.db = db
        self.clock = clock
        self.git = git

    def _project(self, tenant_id: str, project_id: str) -> Row[Any]:
        project_id = v.uuid_id("project_id", project_id)
        return self.db.transaction(lambda conn: project_row(conn, tenant_id, project_id), write=False)

    def ensure_pre_design(self, project: Row[Any]) -> None:
        """Take the project's pre_design snapshot if it has none yet (see
        `swarm_ticketing.snapshots`); a repository that cannot be read now
        is left for the next time."""
        if not project.repository:
            return

        def known(conn: Connection) -> tuple[bool, str | None]:
            taken = conn.execute(
                sa.select(S.c.id).where(
                    S.c.project_id == project.id, S.c.snapshot_type == SnapshotType.PRE_DESIGN.value
                )
            ).first()
            first = conn.execute(
                sa.select(M.c.merge_commit)
                .where(M.c.project_id == project.id, M.c.merge_commit.is_not(None))
                .order_by(M.c.updated_at, M.c.seq)
            ).first()
            return taken is not None, first.merge_commit if first is not None else None

        taken, first_merge = self.db.transaction(known, write=False)
        if taken:
            return
        try:
            if first_merge is None:
                commit = self.git.head(project.tenant_id, project.repository, project.base_branch)
            else:
                parent = self.git.first_parent(
                    project.tenant_id, project.repository, project.base_branch, first_merge
                )
                if parent is None:
                    return
                commit = parent
        except SwarmError as exc:
            log.warning("pre_design snapshot of project %s not taken yet: %s", project.id, exc.message)
            return
        try:
            self.db.transaction(
                lambda conn: insert(
                    conn,
                    project,
                    SnapshotType.PRE_DESIGN,
                    commit,
                    project.created_at,  # what it shows is the branch as the project found it
                    description="Before the project's first merge",
                    created_by="system",
                )
            )
        except IntegrityError:
            pass  # a concurrent caller took it

    def create_manual(
        self, tenant_id: str, project_id: str, description: str, created_by: str, key: RequestKey | None
    ) -> Snapshot:
        project = self._project(tenant_id, project_id)
        self.ensure_pre_design(project)
        head = self.git.head(tenant_id, project.repository, project.base_branch)

        def work(conn: Connection, now: datetime) -> tuple[Snapshot, Answer]:
            row = project_row(conn, tenant_id, project.id)
            made = insert(
                conn, row, SnapshotType.MANUAL, head, now, description=description, created_by=created_by
            )
            return made, {"snapshot_id": made.id}

        def replay(conn: Connection, answer: Answer) -> Snapshot:
            return to_snapshot(conn.execute(sa.select(S).where(S.c.id == answer["snapshot_id"])).one())

        return requests.LOG.run(self.db, key, self.clock.now, work, replay)

    def page(self, tenant_id: str, project_id: str, size: int, token: str) -> Page[Snapshot]:
        size = page_size(size)
        project = self._project(tenant_id, project_id)
        self.ensure_pre_design(project)
        query = sa.select(S).where(S.c.tenant_id == tenant_id, S.c.project_id == project.id)
        filters = ["snapshots", tenant_id, project.id]
        order = [S.c.created_at, S.c.seq]
        return keyset.listing(self.db, query, order, filters, size, token, to_snapshot, descending=True)

    def get(self, tenant_id: str, project_id: str, snapshot_id: str) -> Snapshot:
        project = self._project(tenant_id, project_id)
        snapshot_id = v.uuid_id("snapshot_id", snapshot_id)
        return self.db.transaction(
            lambda conn: to_snapshot(snapshot_row(conn, project, snapshot_id)), write=False
        )

    def plan(self, tenant_id: str, project_id: str, snapshot_id: str) -> Plan:
        project = self._project(tenant_id, project_id)
        snapshot_id = v.uuid_id("snapshot_id", snapshot_id)
        self.git.remote(tenant_id, project.repository)  # FAILED_PRECONDITION before anything else
        self.ensure_pre_design(project)
        snapshot = self.db.transaction(
            lambda conn: to_snapshot(snapshot_row(conn, project, snapshot_id)), write=False
        )
        head = self.git.head(tenant_id, project.repository, project.base_branch)
        leaving, returning = self.git.between(
            tenant_id, project.repository, project.base_branch, head, snapshot.commit_sha
        )

        def read(conn: Connection) -> Plan:
            return Plan(
                snapshot,
                head,
                _in_order(conn, to_cancel(conn, tenant_id, project.id)),
                open_merge_requests(conn, tenant_id, project.id),
                _owners(conn, project, leaving),
                _owners(conn, project, returning),
            )

        return self.db.transaction(read, write=False)
