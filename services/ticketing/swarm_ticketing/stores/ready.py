"""Which tickets became claimable in a transaction: the long-poll's signal.

Every write that leaves a ticket READY notes it here (by ticket, so a ticket
that changes twice in one transaction counts once, as it ends); the commit
hook (swarm_ticketing.matching) wakes that many parked pollers of the right
tenant, project and role once the transaction committed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection

from swarm_ticketing.domain import Ticket, TicketState
from swarmcommon.db import Notes, notes

TOPIC = "ready_tickets"


class ReadyKey(NamedTuple):
    tenant_id: str
    project_id: str
    role: str


def changed(conn: Connection, ticket: Ticket) -> None:
    """Note `ticket` as it now is: claimable or not."""
    noted(
        conn,
        ticket.id,
        ReadyKey(ticket.tenant_id, ticket.project_id, ticket.current_role.value),
        ticket.state,
    )


def noted(conn: Connection, ticket_id: str, key: ReadyKey, state: Any) -> None:
    ready: dict[str, ReadyKey] = notes(conn).setdefault(TOPIC, {})
    if state == TicketState.READY:
        ready[ticket_id] = key
    else:
        ready.pop(ticket_id, None)


def counted(transaction: Notes) -> Counter[ReadyKey]:
    """How many tickets became claimable, per (tenant, project, role)."""
    return Counter(transaction.get(TOPIC, {}).values())
