"""Merge requests, kept in step with a ticket's stages inside the same
transaction as the stage change (and announced through the outbox):

- an authoring stage (coder, tests, ...) hands back `branch` and `commit` and
  a reviewer stage follows: the merge request opens (`pr.opened`); a rework
  after a rejection reopens it with the new commit;
- the reviewer hands back `merge_commit`: it is merged (`pr.merged`);
- the reviewer reports a failure with details `{"review": "rejected"}`: it is
  rejected (`pr.rejected`) and the ticket goes back to its author;
- its ticket is cancelled: it is closed (`pr.closed`).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_ticketing import snapshots
from swarm_ticketing.domain import AgentRole, EventType, MergeRequest, MergeRequestState
from swarm_ticketing.stores import journal
from swarm_ticketing.stores.rows import to_merge_request
from swarm_ticketing.tables import merge_requests
from swarmcommon import keyset
from swarmcommon.db import Database
from swarmcommon.errors import NotFound
from swarmcommon.outbox import OutboxEvent
from swarmcommon.pagination import Page

M = merge_requests


def _event(kind: EventType, mr: MergeRequest, title: str) -> OutboxEvent:
    data = {
        "merge_request_id": mr.id,
        "ticket_id": mr.ticket_id,
        "project_id": mr.project_id,
        "title": title,
        "branch": mr.branch,
        "commit": mr.commit,
        "merge_commit": mr.merge_commit,
        "review_comments": mr.review_comments,
        "author_agent_id": mr.author_agent_id,
        "reviewer_agent_id": mr.reviewer_agent_id,
    }
    return OutboxEvent(mr.tenant_id, kind.value, data)


def _object(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any, limit: int) -> str:
    return str(value)[:limit] if value is not None else ""


def _current(conn: Connection, ticket_id: str, branch: str) -> Any:
    return conn.execute(sa.select(M).where(M.c.ticket_id == ticket_id, M.c.branch == branch)).first()


def _announce(conn: Connection, mr_id: str, kind: EventType, title: str, now: datetime) -> None:
    mr = to_merge_request(conn.execute(sa.select(M).where(M.c.id == mr_id)).one())
    journal.record(conn, now, [], [_event(kind, mr, title)])


def after_submit(conn: Connection, row: Any, result_json: str, next_stage: str | None, now: datetime) -> None:
    """Open or merge the ticket's merge request as the submitted stage says."""
    result = _object(result_json)
    branch = _text(result.get("branch"), 250)
    if not branch:
        return
    agent = row.claimed_by_agent_id
    existing = _current(conn, row.id, branch)
    if row.role == AgentRole.REVIEWER and result.get("merge_commit"):
        if existing is None:
            return
        conn.execute(
            sa.update(M)
            .where(M.c.id == existing.id)
            .values(
                state=MergeRequestState.MERGED.value,
                merge_commit=_text(result["merge_commit"], 64),
                review_comments=_text(result.get("comments"), 4000) or None,
                reviewer_agent_id=agent,
                updated_at=now,
            )
        )
        snapshots.after_merge(conn, row, now)  # every N merges a checkpoint
        _announce(conn, existing.id, EventType.PR_MERGED, row.name, now)
        return
    if next_stage != AgentRole.REVIEWER or not result.get("commit"):
        return
    commit = _text(result["commit"], 64)
    if existing is None:
        mr_id = str(uuid.uuid4())
        conn.execute(
            sa.insert(M).values(
                id=mr_id,
                tenant_id=row.tenant_id,
                project_id=row.project_id,
                ticket_id=row.id,
                branch=branch,
                commit_sha=commit,
                state=MergeRequestState.OPEN.value,
                author_agent_id=agent,
                created_at=now,
                updated_at=now,
            )
        )
    else:  # reworked after a rejection
        mr_id = existing.id
        conn.execute(
            sa.update(M)
            .where(M.c.id == mr_id)
            .values(
                state=MergeRequestState.OPEN.value, commit_sha=commit, author_agent_id=agent, updated_at=now
            )
        )
    _announce(conn, mr_id, EventType.PR_OPENED, row.name, now)


def after_failure(conn: Connection, row: Any, reason: str, details_json: str, now: datetime) -> bool:
    """Reject the merge request a reviewer turned down; True when it did."""
    details = _object(details_json)
    branch = _text(details.get("branch"), 250)
    if row.role != AgentRole.REVIEWER or details.get("review") != "rejected" or not branch:
        return False
    existing = _current(conn, row.id, branch)
    if existing is None:
        return False
    conn.execute(
        sa.update(M)
        .where(M.c.id == existing.id)
        .values(
            state=MergeRequestState.REJECTED.value,
            review_comments=reason[:4000],
            reviewer_agent_id=row.claimed_by_agent_id,
            updated_at=now,
        )
    )
    _announce(conn, existing.id, EventType.PR_REJECTED, row.name, now)
    return True


def close_for(conn: Connection, ticket_ids: list[str], why: str, now: datetime) -> None:
    """Close the open merge requests of tickets that were cancelled (`pr.closed`)."""
    open_ones = conn.execute(
        sa.select(M.c.id, M.c.ticket_id).where(
            M.c.ticket_id.in_(ticket_ids), M.c.state == MergeRequestState.OPEN.value
        )
    ).all()
    for mr in open_ones:
        conn.execute(
            sa.update(M)
            .where(M.c.id == mr.id)
            .values(state=MergeRequestState.CLOSED.value, review_comments=why[:4000], updated_at=now)
        )
        _announce(conn, mr.id, EventType.PR_CLOSED, why, now)


class MergeRequests:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, tenant_id: str, mr_id: str) -> MergeRequest:
        row = self.db.transaction(
            lambda conn: conn.execute(
                sa.select(M).where(M.c.tenant_id == tenant_id, M.c.id == mr_id)
            ).first(),
            write=False,
        )
        if row is None:
            raise NotFound(
                f"merge request {mr_id} not found", resource_type="merge_request", resource_name=mr_id
            )
        return to_merge_request(row)

    def page(
        self,
        tenant_id: str,
        project_id: str | None,
        ticket_id: str | None,
        state: MergeRequestState | None,
        page_size: int,
        page_token: str,
    ) -> Page[MergeRequest]:
        query = sa.select(M).where(M.c.tenant_id == tenant_id)
        if project_id:
            query = query.where(M.c.project_id == project_id)
        if ticket_id:
            query = query.where(M.c.ticket_id == ticket_id)
        if state:
            query = query.where(M.c.state == state.value)
        filters = ["merge_requests", tenant_id, project_id, ticket_id, state]
        return keyset.listing(self.db, query, [M.c.seq], filters, page_size, page_token, to_merge_request)
