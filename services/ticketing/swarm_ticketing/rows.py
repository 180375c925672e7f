"""Database rows to domain objects."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from swarm_ticketing.domain import AgentRole, Lease, Ticket, TicketState, TicketType
from swarm_ticketing.tables import ticket_dependencies

CLEARED_LEASE: dict[str, Any] = {
    "claim_token": None,
    "claim_expires_at": None,
    "claimed_by_agent_id": None,
    "claimed_at": None,
}


def encode_stages(stages: Sequence[AgentRole]) -> str:
    return ",".join(s.value for s in stages)


def decode_stages(raw: str) -> tuple[AgentRole, ...]:
    return tuple(AgentRole(s) for s in raw.split(","))


def dependencies_of(
    conn: Connection, ticket_ids: Iterable[str]
) -> dict[str, list[str]]:
    ids = list(ticket_ids)
    deps: dict[str, list[str]] = defaultdict(list)
    if not ids:
        return deps
    d = ticket_dependencies
    for ticket_id, parent in conn.execute(
        sa.select(d.c.ticket_id, d.c.depends_on_id).where(d.c.ticket_id.in_(ids))
    ):
        deps[ticket_id].append(parent)
    return deps


def to_ticket(row: Row[Any], depends_on: Sequence[str] = ()) -> Ticket:
    m = row._mapping
    lease = None
    if m["claim_token"] is not None and m["state"] in (
        TicketState.ASSIGNED,
        TicketState.IN_PROGRESS,
    ):
        lease = Lease(m["claim_token"], m["claimed_by_agent_id"], m["claim_expires_at"])
    return Ticket(
        id=m["id"],
        tenant_id=m["tenant_id"],
        project_id=m["project_id"],
        name=m["name"],
        description=m["description"],
        type=TicketType(m["type"]),
        priority=m["priority"],
        state=TicketState(m["state"]),
        stages=decode_stages(m["stages"]),
        stage_index=m["stage_index"],
        depends_on=tuple(sorted(depends_on)),
        lease=lease,
        failure_count=m["failure_count"],
        last_failure_reason=m["last_failure_reason"],
        last_failure_at=m["last_failure_at"],
        quarantine_reason=m["quarantine_reason"],
        quarantined_at=m["quarantined_at"],
        result_json=m["result_json"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def load_tickets(conn: Connection, rows: Sequence[Row[Any]]) -> list[Ticket]:
    deps = dependencies_of(conn, (r._mapping["id"] for r in rows))
    return [to_ticket(r, deps.get(r._mapping["id"], ())) for r in rows]


def load_ticket(conn: Connection, row: Row[Any]) -> Ticket:
    return load_tickets(conn, [row])[0]
