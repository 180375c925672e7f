"""The dead-letter queue: quarantined tickets, and their redrive by a human."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_ticketing.domain import (
    ActorType,
    AuditEvent,
    CollaborationPattern,
    QuarantineCause,
    Ticket,
    TicketState,
)
from swarm_ticketing.stores import journal, ready, requests
from swarm_ticketing.stores.journal import AuditEntry
from swarm_ticketing.stores.rows import load_tickets, to_ticket
from swarm_ticketing.stores.tickets import ticket_not_found
from swarm_ticketing.tables import tickets
from swarmcommon import keyset
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition
from swarmcommon.idempotency import Answer, RequestKey
from swarmcommon.pagination import Page

T = tickets


def _in_order(conn: Connection, ticket_ids: Sequence[str]) -> list[Ticket]:
    by_id = {t.id: t for t in load_tickets(conn.execute(sa.select(T).where(T.c.id.in_(ticket_ids))).all())}
    return [by_id[i] for i in ticket_ids]


def _held_for_budget() -> sa.ColumnElement[bool]:
    return T.c.quarantine_cause == QuarantineCause.BUDGET_EXCEEDED.value


def _kept(row: Any) -> int:
    """The failure count a redrive leaves."""
    return int(row.failure_count) if row.quarantine_cause == QuarantineCause.BUDGET_EXCEEDED else 0


def _back_to_ready(conn: Connection, ticket_ids: Sequence[str], now: datetime) -> None:
    conn.execute(
        sa.update(T)
        .where(T.c.id.in_(ticket_ids))
        .values(
            state=TicketState.READY.value,
            failure_count=sa.case((_held_for_budget(), T.c.failure_count), else_=0),
            quarantined_at=None,
            quarantine_reason=None,
            quarantine_cause=None,
            updated_at=now,
        )
    )


def _redrive_attempts(
    conn: Connection, tenant_id: str, found: dict[str, Any], now: datetime, operator: str
) -> set[str]:
    """Ensemble tickets redriven with no attempt done go back to waiting for
    their attempts (BLOCKED), and their quarantined attempts are redriven with
    them. Returns the ensemble tickets left waiting."""
    mains = [
        i for i, r in found.items() if r.pattern == CollaborationPattern.ENSEMBLE and r.ensemble_of is None
    ]
    waiting: set[str] = set()
    for main in mains:
        attempts = conn.execute(
            sa.select(T.c.id, T.c.state, T.c.failure_count, T.c.quarantine_cause)
            .where(T.c.ensemble_of == main)
            .with_for_update()
        ).all()
        if any(a.state == TicketState.DONE for a in attempts):
            continue  # the judge has something to choose from
        waiting.add(main)
        conn.execute(sa.update(T).where(T.c.id == main).values(state=TicketState.BLOCKED.value))
        again = [a for a in attempts if a.state == TicketState.QUARANTINED]
        _back_to_ready(conn, [a.id for a in again], now)
        for t in _in_order(conn, [a.id for a in again]):
            ready.changed(conn, t)
        journal.record(
            conn,
            now,
            [
                AuditEntry(
                    tenant_id,
                    a.id,
                    AuditEvent.REDRIVEN,
                    ActorType.HUMAN,
                    actor_id=operator,
                    old_value={"state": TicketState.QUARANTINED.value, "failure_count": a.failure_count},
                    new_value={"state": TicketState.READY.value, "failure_count": _kept(a)},
                    rationale=f"redriven with its ensemble ticket {main}",
                )
                for a in again
            ],
        )
    return waiting


class DeadLetters:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def page(self, tenant_id: str, project_id: str | None, page_size: int, page_token: str) -> Page[Ticket]:
        query = sa.select(T).where(T.c.tenant_id == tenant_id, T.c.state == TicketState.QUARANTINED.value)
        if project_id:
            query = query.where(T.c.project_id == project_id)
        order = [T.c.quarantined_at, T.c.id]
        filters = ["dlq", tenant_id, project_id]
        return keyset.listing(self.db, query, order, filters, page_size, page_token, to_ticket)

    def redrive(
        self,
        tenant_id: str,
        ticket_ids: Sequence[str],
        operator: str,
        reason: str,
        key: RequestKey | None = None,
    ) -> list[Ticket]:
        """Quarantined tickets back to READY with a fresh failure count (a
        ticket held for its budget keeps its count: none was counted for it).
        An ensemble ticket none of whose attempts succeeded goes back to
        waiting for them (BLOCKED), and its quarantined attempts are redriven
        with it.

        All or nothing: an unknown id is NOT_FOUND and a ticket that is not
        quarantined is FAILED_PRECONDITION, and then nothing changes.
        """

        def work(conn: Connection, now: datetime) -> tuple[list[Ticket], Answer]:
            found = self._lock_quarantined(conn, tenant_id, ticket_ids)
            _back_to_ready(conn, ticket_ids, now)
            # An ensemble whose every attempt failed waits for its attempts again.
            waiting = _redrive_attempts(conn, tenant_id, found, now, operator)
            journal.record(
                conn,
                now,
                [
                    AuditEntry(
                        tenant_id,
                        ticket_id,
                        AuditEvent.REDRIVEN,
                        ActorType.HUMAN,
                        actor_id=operator,
                        old_value={
                            "state": TicketState.QUARANTINED.value,
                            "failure_count": found[ticket_id].failure_count,
                        },
                        new_value={
                            "state": (
                                TicketState.BLOCKED if ticket_id in waiting else TicketState.READY
                            ).value,
                            "failure_count": _kept(found[ticket_id]),
                        },
                        rationale=reason or None,
                    )
                    for ticket_id in ticket_ids
                ],
            )
            redriven = _in_order(conn, ticket_ids)
            for t in redriven:
                ready.changed(conn, t)
            return redriven, {}

        return requests.LOG.run(
            self.db, key, self.clock.now, work, lambda conn, _: _in_order(conn, ticket_ids)
        )

    @staticmethod
    def _lock_quarantined(conn: Connection, tenant_id: str, ticket_ids: Sequence[str]) -> dict[str, Any]:
        rows = conn.execute(
            sa.select(
                T.c.id, T.c.state, T.c.failure_count, T.c.quarantine_cause, T.c.pattern, T.c.ensemble_of
            )
            .where(T.c.tenant_id == tenant_id, T.c.id.in_(ticket_ids))
            .with_for_update()
        ).all()
        found = {r.id: r for r in rows}
        for ticket_id in ticket_ids:
            if ticket_id not in found:
                raise ticket_not_found(ticket_id)
            if found[ticket_id].state != TicketState.QUARANTINED:
                raise FailedPrecondition(
                    f"ticket {ticket_id} is {found[ticket_id].state}, not quarantined; only "
                    "quarantined tickets can be redriven"
                )
        return found
