"""Editing a ticket nobody is working on (UpdateTicket): fix a dead letter's
spec before its redrive, reprioritise, change its stages.

Only a BLOCKED, READY or QUARANTINED ticket can be edited: under a lease an
agent is working from the old spec (cancel it, or wait), and a done or
cancelled one is history. New stages start the ticket again at the first
one. An ensemble's stages are its pattern's; its unfinished attempts take
its new description and priority. Every edit is one audit entry with the
old and new values.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_ticketing.domain import (
    EDITABLE_STATES,
    FINAL_STATES,
    ActorType,
    AuditEvent,
    CollaborationPattern,
    Ticket,
    TicketEdit,
)
from swarm_ticketing.stores import journal, requests
from swarm_ticketing.stores import statements as stmt
from swarm_ticketing.stores.journal import AuditEntry
from swarm_ticketing.stores.rows import encode_stages
from swarm_ticketing.stores.tickets import load_ticket, lock_ticket
from swarm_ticketing.tables import tickets
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition
from swarmcommon.idempotency import Answer, RequestKey

T = tickets


class Edits:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def edit(
        self,
        tenant_id: str,
        ticket_id: str,
        change: TicketEdit,
        operator: str,
        reason: str,
        key: RequestKey | None = None,
    ) -> Ticket:
        def work(conn: Connection, now: datetime) -> tuple[Ticket, Answer]:
            row = lock_ticket(conn, tenant_id, ticket_id)
            if row.state not in EDITABLE_STATES:
                raise FailedPrecondition(
                    f"ticket {ticket_id} is {row.state}: only a blocked, ready or quarantined ticket can "
                    "be edited (cancel it, or wait for its stage to end)",
                    reason="TICKET_NOT_EDITABLE",
                    ticket_id=ticket_id,
                    state=row.state,
                )
            if change.stages is not None and row.pattern == CollaborationPattern.ENSEMBLE:
                raise FailedPrecondition(
                    f"ticket {ticket_id} is part of an ensemble: its stages are the pattern's",
                    reason="STAGES_OF_PATTERN",
                    ticket_id=ticket_id,
                )
            old, new = _changes(row, change)
            ticket = stmt.update_ticket(conn, row.id, {**new, "updated_at": now})
            if row.ensemble_of is None and row.pattern == CollaborationPattern.ENSEMBLE:
                shared = {k: v for k, v in new.items() if k in ("description", "priority")}
                if shared:  # its attempts work the same spec
                    conn.execute(
                        sa.update(T)
                        .where(T.c.ensemble_of == row.id, T.c.state.not_in([s.value for s in FINAL_STATES]))
                        .values(**shared, updated_at=now)
                    )
            journal.record(
                conn,
                now,
                [
                    AuditEntry(
                        tenant_id,
                        row.id,
                        AuditEvent.EDITED,
                        ActorType.HUMAN,
                        actor_id=operator,
                        old_value=old,
                        new_value=new,
                        rationale=reason or None,
                    )
                ],
            )
            return ticket, {"edited": sorted(new)}

        return requests.LOG.run(
            self.db, key, self.clock.now, work, lambda conn, _: load_ticket(conn, tenant_id, ticket_id)
        )


def _changes(row: Any, change: TicketEdit) -> tuple[dict[str, Any], dict[str, Any]]:
    """(old values, new values) of the columns `change` touches."""
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    if change.description is not None:
        old["description"], new["description"] = row.description, change.description
    if change.priority is not None:
        old["priority"], new["priority"] = row.priority, change.priority
    if change.stages is not None:
        old.update(stages=row.stages, stage_index=row.stage_index)
        new.update(stages=encode_stages(change.stages), stage_index=0, role=change.stages[0].value)
    return old, new
