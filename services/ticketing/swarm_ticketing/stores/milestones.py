"""What a ticket's completion says beyond itself, in the completing transaction:

- its actual minutes (the time its leases were held) are recorded, and
  `ticket.completed` says them beside the estimate;
- `ticket.completed` carries the ticket's merged pull request (merge request
  id, branch, commit, merge commit), so an integration can link the work;
- the last design ticket of a project to finish announces
  `project.design_complete` (the seed's event: implementation can start).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from swarm_ticketing.domain import FINAL_STATES, EventType, MergeRequestState, TicketType
from swarm_ticketing.stores import estimates
from swarm_ticketing.tables import merge_requests, tickets
from swarmcommon.outbox import OutboxEvent

T = tickets
M = merge_requests


def on_done(conn: Connection, row: Row[Any], now: datetime) -> tuple[dict[str, Any], list[OutboxEvent]]:
    """(what `ticket.completed` adds, further events) for the ticket `row` that
    just finished; its actual minutes are recorded (the tenant's history)."""
    actual = estimates.record_actual(conn, row, now)
    merged = conn.execute(
        sa.select(M)
        .where(M.c.ticket_id == row.id, M.c.state == MergeRequestState.MERGED.value)
        .order_by(M.c.updated_at.desc())
        .limit(1)
    ).first()
    link: dict[str, Any] = {"actual_minutes": actual}
    if row.estimate_expected is not None:
        link["estimated_minutes"] = row.estimate_expected
    if merged is not None:
        link["pull_request"] = {
            "merge_request_id": merged.id,
            "branch": merged.branch,
            "commit": merged.commit_sha,
            "merge_commit": merged.merge_commit,
        }
    return link, _design_complete(conn, row)


def _design_complete(conn: Connection, row: Row[Any]) -> list[OutboxEvent]:
    if row.type != TicketType.DESIGN or row.ensemble_of is not None:
        return []
    design = sa.and_(
        T.c.project_id == row.project_id, T.c.type == TicketType.DESIGN.value, T.c.ensemble_of.is_(None)
    )
    pending = conn.execute(
        sa.select(sa.func.count()).where(
            design, T.c.id != row.id, T.c.state.not_in([s.value for s in FINAL_STATES])
        )
    ).scalar_one()
    if pending:
        return []
    done = conn.execute(sa.select(T.c.id).where(design).order_by(T.c.ordinal)).scalars().all()
    data = {"project_id": row.project_id, "design_ticket_ids": list(done)}
    return [OutboxEvent(row.tenant_id, EventType.DESIGN_COMPLETE.value, data)]
