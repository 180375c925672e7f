"""Reading tickets and their audit trail."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from swarm_ticketing.domain import AgentRole, Ticket, TicketEvent, TicketState
from swarm_ticketing.stores import statements as stmt
from swarm_ticketing.stores.rows import to_event, to_ticket
from swarm_ticketing.tables import audit_events, tickets
from swarmcommon import keyset
from swarmcommon.db import Database
from swarmcommon.errors import NotFound
from swarmcommon.pagination import Page

T = tickets


def ticket_not_found(ticket_id: str) -> NotFound:
    return NotFound(f"ticket {ticket_id} not found", resource_type="ticket", resource_name=ticket_id)


def lock_ticket(conn: Connection, tenant_id: str, ticket_id: str) -> Row[Any]:
    """The ticket's row, locked for this transaction; NOT_FOUND when the tenant has none."""
    row = conn.execute(stmt.LOCK_TICKET, {"tenant": tenant_id, "ticket_id": ticket_id}).first()
    if row is None:
        raise ticket_not_found(ticket_id)
    return row


def load_ticket(conn: Connection, tenant_id: str, ticket_id: str) -> Ticket:
    row = conn.execute(sa.select(T).where(T.c.tenant_id == tenant_id, T.c.id == ticket_id)).first()
    if row is None:
        raise ticket_not_found(ticket_id)
    return to_ticket(row)


class Tickets:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, tenant_id: str, ticket_id: str) -> Ticket:
        return self.db.transaction(lambda conn: load_ticket(conn, tenant_id, ticket_id), write=False)

    def page(
        self,
        tenant_id: str,
        *,
        project_id: str | None,
        state: TicketState | None,
        role: AgentRole | None,
        page_size: int,
        page_token: str,
    ) -> Page[Ticket]:
        query = sa.select(T).where(T.c.tenant_id == tenant_id)
        if project_id:
            query = query.where(T.c.project_id == project_id)
        if state:
            query = query.where(T.c.state == state.value)
        if role:
            query = query.where(T.c.role == role.value)
        order = [T.c.created_at, T.c.ordinal, T.c.id]
        filters = ["tickets", tenant_id, project_id, state, role]
        return keyset.listing(self.db, query, order, filters, page_size, page_token, to_ticket)

    def events(self, tenant_id: str, ticket_id: str, page_size: int, page_token: str) -> Page[TicketEvent]:
        a = audit_events
        query = sa.select(a).where(a.c.tenant_id == tenant_id, a.c.ticket_id == ticket_id)

        def read(conn: Connection) -> Page[TicketEvent]:
            load_ticket(conn, tenant_id, ticket_id)  # NOT_FOUND rather than an empty trail
            rows = keyset.page(
                conn, query, [a.c.seq], ["events", tenant_id, ticket_id], page_size, page_token
            )
            return Page([to_event(r) for r in rows.items], rows.next_page_token)

        return self.db.transaction(read, write=False)
