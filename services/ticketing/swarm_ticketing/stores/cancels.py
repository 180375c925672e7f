"""Cancelling tickets: a stop that stops.

A cancelled ticket is CANCELLED for good, in one transaction:
- its lease is revoked: the token is cleared, so the agent's next heartbeat,
  start, submit or failure report is FAILED_PRECONDITION (reason
  TICKET_CANCELLED), and the LLM proxy's spend check, which needs a live
  lease, refuses its next LLM call;
- its open merge request is closed (`pr.closed`);
- it is audited (`cancelled`, with who and why) and announced
  (`ticket.cancelled`, with the agent that held it);
- an ensemble ticket takes its unfinished attempts with it; a cancelled
  attempt counts as ended for its ensemble (`ensembles.after_attempt`).

A ticket that unfinished tickets depend on is refused unless the caller asks
for the cascade: they could never run. Cancelling a project cancels every
ticket of it that is not done.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from swarm_ticketing.domain import (
    FINAL_STATES,
    ActorType,
    AuditEvent,
    CollaborationPattern,
    EventType,
    Ticket,
    TicketState,
)
from swarm_ticketing.stores import ensembles, journal, merge_requests, ready, requests
from swarm_ticketing.stores.journal import AuditEntry
from swarm_ticketing.stores.rows import CLEARED_LEASE, load_tickets
from swarm_ticketing.stores.tickets import lock_ticket
from swarm_ticketing.tables import projects, ticket_dependencies, tickets
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition, NotFound
from swarmcommon.idempotency import Answer, RequestKey

T = tickets
D = ticket_dependencies
_FINAL = [s.value for s in FINAL_STATES]
SHOWN = 5  # dependents named in a refusal


def _in_order(conn: Connection, ids: Sequence[str]) -> list[Ticket]:
    by_id = {t.id: t for t in load_tickets(conn.execute(sa.select(T).where(T.c.id.in_(ids))).all())}
    return [by_id[i] for i in ids if i in by_id]


def _unfinished(conn: Connection, query: sa.Select[tuple[str]]) -> list[str]:
    return [str(r[0]) for r in conn.execute(query.where(T.c.state.not_in(_FINAL)).order_by(T.c.ordinal))]


def _attempts(conn: Connection, ids: Sequence[str]) -> list[str]:
    return _unfinished(conn, sa.select(T.c.id).where(T.c.ensemble_of.in_(ids)))


def _dependents(conn: Connection, ids: Sequence[str], ensemble: str | None = None) -> list[str]:
    """Every unfinished ticket that depends on `ids`, directly or not; not
    through `ensemble`, which takes a cancelled attempt as one that ended."""
    found: list[str] = []
    seen = {*ids, ensemble} if ensemble else set(ids)
    frontier = list(ids)
    while frontier:
        children = _unfinished(
            conn,
            sa.select(T.c.id).where(
                T.c.id.in_(sa.select(D.c.ticket_id).where(D.c.depends_on_id.in_(frontier)))
            ),
        )
        frontier = [c for c in children if c not in seen]
        seen.update(frontier)
        found += frontier
    return found


def cancel_in(
    conn: Connection,
    tenant_id: str,
    ids: Sequence[str],
    now: datetime,
    *,
    actor: ActorType,
    actor_id: str,
    reason: str,
) -> list[Ticket]:
    """Cancel the unfinished tickets among `ids` (locked here), in order."""
    rows = conn.execute(
        sa.select(T)
        .where(T.c.tenant_id == tenant_id, T.c.id.in_(ids), T.c.state.not_in(_FINAL))
        .with_for_update()
    ).all()
    if not rows:
        return []
    chosen = [r.id for r in rows]
    conn.execute(
        sa.update(T)
        .where(T.c.id.in_(chosen))
        .values(**CLEARED_LEASE, state=TicketState.CANCELLED.value, updated_at=now)
    )
    merge_requests.close_for(
        conn, chosen, f"Closed: its ticket was cancelled ({reason or 'no reason given'})", now
    )
    cancelled = _in_order(conn, [i for i in ids if i in set(chosen)])
    before = {r.id: r for r in rows}
    for t in cancelled:
        ready.changed(conn, t)
    journal.record(
        conn,
        now,
        [
            AuditEntry(
                tenant_id,
                t.id,
                AuditEvent.CANCELLED,
                actor,
                actor_id=actor_id,
                old_value={"state": before[t.id].state, "agent_id": before[t.id].claimed_by_agent_id},
                new_value={"state": TicketState.CANCELLED.value},
                rationale=reason or None,
            )
            for t in cancelled
        ],
        [
            journal.ticket_event(
                EventType.CANCELLED, t, agent_id=before[t.id].claimed_by_agent_id, reason=reason, by=actor_id
            )
            for t in cancelled
        ],
    )
    for r in rows:
        if r.ensemble_of is not None and r.ensemble_of not in before:
            ensembles.after_attempt(conn, r, now)
    return cancelled


def _by_person(
    conn: Connection, tenant_id: str, ids: Sequence[str], now: datetime, operator: str, reason: str
) -> list[Ticket]:
    return cancel_in(conn, tenant_id, ids, now, actor=ActorType.HUMAN, actor_id=operator, reason=reason)


def cancel_leftovers(conn: Connection, ensemble: Row[Any], chosen: int, now: datetime) -> None:
    """The judge chose: attempts still at work (a quorum started it) are pointless."""
    leftover = [a.ticket_id for a in ensembles.attempts_of(conn, ensemble.id) if a.state not in FINAL_STATES]
    reason = f"the judge chose attempt {chosen}"
    cancel_in(
        conn, ensemble.tenant_id, leftover, now, actor=ActorType.SYSTEM, actor_id="ensemble", reason=reason
    )


class Cancellations:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def cancel_ticket(
        self,
        tenant_id: str,
        ticket_id: str,
        operator: str,
        reason: str,
        cascade: bool,
        key: RequestKey | None = None,
    ) -> list[Ticket]:
        def work(conn: Connection, now: datetime) -> tuple[list[Ticket], Answer]:
            row = lock_ticket(conn, tenant_id, ticket_id)
            if row.state in _FINAL:
                raise FailedPrecondition(
                    f"ticket {ticket_id} is {row.state}; only an unfinished ticket can be cancelled",
                    reason="TICKET_FINISHED",
                    ticket_id=ticket_id,
                    state=row.state,
                )
            ids = [row.id]
            if row.pattern == CollaborationPattern.ENSEMBLE and row.ensemble_of is None:
                ids += _attempts(conn, ids)
            dependents = [d for d in _dependents(conn, ids, row.ensemble_of) if d not in ids]
            if dependents and not cascade:
                shown = ", ".join(dependents[:SHOWN]) + (" …" if len(dependents) > SHOWN else "")
                raise FailedPrecondition(
                    f"{len(dependents)} unfinished tickets depend on ticket {ticket_id} ({shown}); "
                    "cancel with cascade to stop them too",
                    reason="TICKET_HAS_DEPENDENTS",
                    ticket_id=ticket_id,
                    dependents=str(len(dependents)),
                )
            ids += dependents
            done = cancel_in(
                conn, tenant_id, ids, now, actor=ActorType.HUMAN, actor_id=operator, reason=reason
            )
            return done, {"ticket_ids": [t.id for t in done]}

        return requests.LOG.run(self.db, key, self.clock.now, work, self._replay)

    def cancel_project(
        self, tenant_id: str, project_id: str, operator: str, reason: str, key: RequestKey | None = None
    ) -> list[Ticket]:
        def work(conn: Connection, now: datetime) -> tuple[list[Ticket], Answer]:
            known = conn.execute(
                sa.select(projects.c.id).where(projects.c.tenant_id == tenant_id, projects.c.id == project_id)
            ).first()
            if known is None:
                raise NotFound(
                    f"project {project_id} not found", resource_type="project", resource_name=project_id
                )
            ids = _unfinished(conn, sa.select(T.c.id).where(T.c.project_id == project_id))
            done = cancel_in(
                conn, tenant_id, ids, now, actor=ActorType.HUMAN, actor_id=operator, reason=reason
            )
            return done, {"ticket_ids": [t.id for t in done]}

        return requests.LOG.run(self.db, key, self.clock.now, work, self._replay)

    @staticmethod
    def _replay(conn: Connection, answer: Answer) -> list[Ticket]:
        return _in_order(conn, answer["ticket_ids"])
