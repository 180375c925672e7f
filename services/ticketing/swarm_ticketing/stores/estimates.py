"""Estimates over the tenant's own history, actual minutes, and a project's
progress and ETA (rules in `estimation.py`).

- At creation every ticket gets its complexity and estimate, kept on the row
  so the estimate reported later is the one made before the work.
- When a ticket is done its actual minutes are the time its leases were
  held, read from its audit trail (each `assigned` up to the entry that
  ended that stage attempt); they become the tenant's history.
- A project's progress is read when asked: counts by state, the remaining
  expected minutes, the remaining critical path, the agents holding its
  leases now, the ETA, and how good its estimates were.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from swarm_ticketing import estimation
from swarm_ticketing.dag import PlanKey, Planned
from swarm_ticketing.domain import AuditEvent, TicketState
from swarm_ticketing.stores.rows import to_estimate
from swarm_ticketing.tables import audit_events, projects, tickets
from swarmcommon.db import Database
from swarmcommon.errors import NotFound

T = tickets
A = audit_events
HISTORY = 10_000  # the most recent done tickets an estimate looks at
# Audit entries that end the stage attempt an `assigned` began.
_ENDS = {
    AuditEvent.STAGE_COMPLETE,
    AuditEvent.COMPLETED,
    AuditEvent.FAILURE_RECORDED,
    AuditEvent.RELEASED,
    AuditEvent.BUDGET_EXCEEDED,
    AuditEvent.CANCELLED,
}


def at_creation(conn: Connection, tenant_id: str, rows: Sequence[Planned]) -> dict[PlanKey, dict[str, Any]]:
    """Each planned row's estimate columns, from the tenant's history."""
    history = conn.execute(
        sa.select(T.c.type, T.c.complexity_score, T.c.actual_minutes)
        .where(T.c.tenant_id == tenant_id, T.c.actual_minutes.is_not(None), T.c.ensemble_of.is_(None))
        .order_by(T.c.updated_at.desc())
        .limit(HISTORY)
    ).all()
    by_category: dict[tuple[str, int], list[float]] = defaultdict(list)
    by_type: dict[str, list[float]] = defaultdict(list)
    for h in history:
        by_category[(h.type, h.complexity_score)].append(h.actual_minutes)
        by_type[h.type].append(h.actual_minutes)
    columns = {}
    for r in rows:
        score = estimation.complexity(r.spec.description, len(r.spec.depends_on))
        kind = r.spec.type.value
        e = estimation.estimate(score, by_category[(kind, score)], by_type[kind])
        columns[r.key] = {
            "complexity_score": e.complexity,
            "estimate_optimistic": e.optimistic,
            "estimate_expected": e.expected,
            "estimate_pessimistic": e.pessimistic,
            "estimate_confidence": e.confidence.value,
        }
    return columns


def worked_minutes(conn: Connection, tenant_id: str, ticket_id: str, now: datetime) -> float:
    """Minutes the ticket's leases were held (an attempt still open ends `now`).
    By tenant and ticket: the audit table's index (ix_audit_ticket) serves it."""
    trail = conn.execute(
        sa.select(A.c.event_type, A.c.created_at)
        .where(A.c.tenant_id == tenant_id, A.c.ticket_id == ticket_id)
        .order_by(A.c.seq)
    ).all()
    worked, started = timedelta(0), None
    for entry in trail:
        if entry.event_type == AuditEvent.ASSIGNED:
            started = entry.created_at
        elif started is not None and entry.event_type in _ENDS:
            worked += entry.created_at - started
            started = None
    if started is not None:
        worked += now - started
    return worked.total_seconds() / 60


def record_actual(conn: Connection, row: Row[Any], now: datetime) -> float:
    minutes = round(worked_minutes(conn, row.tenant_id, row.id, now), 3)
    conn.execute(sa.update(T).where(T.c.id == row.id).values(actual_minutes=minutes))
    return minutes


@dataclass(frozen=True)
class Progress:
    project_id: str
    ticket_count: int
    done: int
    in_progress: int
    queued: int
    quarantined: int
    cancelled: int
    remaining_minutes: float
    critical_path_minutes: float
    working_agents: int
    eta_minutes: float
    eta: datetime
    # Done tickets with an estimate, and how many finished inside its range.
    estimated_done: int
    inside_range: int

    @property
    def percent_complete(self) -> float:
        wanted = self.ticket_count - self.cancelled
        return round(100 * self.done / wanted, 1) if wanted else 100.0


_QUEUED = (TicketState.READY, TicketState.BLOCKED)
_WORKING = (TicketState.ASSIGNED, TicketState.IN_PROGRESS)


def _remaining(r: Any, now: datetime) -> float:
    """What is left of a ticket's expected minutes (its elapsed work counted off)."""
    expected = float(r.estimate_expected or estimation.BASE_MINUTES[5])
    if r.state in _WORKING and r.claimed_at is not None:
        elapsed: timedelta = now - r.claimed_at
        return max(1.0, expected - elapsed.total_seconds() / 60)
    return expected


def progress(db: Database, tenant_id: str, project_id: str, now: datetime) -> Progress:
    def read(conn: Connection) -> Progress:
        known = conn.execute(
            sa.select(projects.c.id).where(projects.c.tenant_id == tenant_id, projects.c.id == project_id)
        ).first()
        if known is None:
            raise NotFound(
                f"project {project_id} not found", resource_type="project", resource_name=project_id
            )
        rows = conn.execute(
            sa.select(T).where(T.c.project_id == project_id, T.c.ensemble_of.is_(None)).order_by(T.c.ordinal)
        ).all()
        states: dict[str, int] = defaultdict(int)
        for r in rows:
            states[r.state] += 1
        unfinished = {
            r.id: _remaining(r, now) for r in rows if r.state not in (TicketState.DONE, TicketState.CANCELLED)
        }
        parents = {r.id: r.parent_ids.split(",") if r.parent_ids else [] for r in rows}
        agents = conn.execute(
            sa.select(sa.func.count(sa.distinct(T.c.claimed_by_agent_id))).where(
                T.c.project_id == project_id, T.c.state.in_([s.value for s in _WORKING])
            )
        ).scalar_one()
        total = sum(unfinished.values())
        path = estimation.critical_path(unfinished, parents)
        eta = estimation.eta_minutes(total, path, agents)
        done = [r for r in rows if r.state == TicketState.DONE and r.actual_minutes is not None]
        judged = [(to_estimate(r._mapping), r.actual_minutes) for r in done]
        inside = sum(1 for e, actual in judged if e is not None and e.covers(actual))
        return Progress(
            project_id=project_id,
            ticket_count=len(rows),
            done=states[TicketState.DONE],
            in_progress=sum(states[s] for s in _WORKING),
            queued=sum(states[s] for s in _QUEUED),
            quarantined=states[TicketState.QUARANTINED],
            cancelled=states[TicketState.CANCELLED],
            remaining_minutes=round(total, 1),
            critical_path_minutes=round(path, 1),
            working_agents=int(agents),
            eta_minutes=round(eta, 1),
            eta=now + timedelta(minutes=eta),
            estimated_done=sum(1 for e, _ in judged if e is not None),
            inside_range=inside,
        )

    return db.transaction(read, write=False)
