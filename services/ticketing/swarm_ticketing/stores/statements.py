"""Pre-built statements for the lease hot paths.

Building a SQLAlchemy statement costs more CPU than running it on a local
database; every claim and submit would pay that twice over. These are built
once (per shape) with bind parameters and reused, which SQLAlchemy's compiled
cache then serves directly.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_ticketing.domain import LEASED_STATES, Ticket, TicketState
from swarm_ticketing.stores import ready
from swarm_ticketing.stores.rows import to_ticket
from swarm_ticketing.tables import ticket_dependencies, tickets

T = tickets
LEASED = [s.value for s in LEASED_STATES]
CLAIM_ORDER = (T.c.priority.desc(), T.c.created_at, T.c.ordinal)
_b = sa.bindparam


def _candidates(has_role: bool, has_project: bool, *columns: Any) -> sa.Select[Any]:
    query = sa.select(T.c.id, *columns).where(T.c.tenant_id == _b("tenant"))
    if has_role:
        query = query.where(T.c.role == _b("p_role"))
    if has_project:
        query = query.where(T.c.project_id == _b("p_project"))
    return query.order_by(*CLAIM_ORDER).limit(1).with_for_update(skip_locked=True)


_LEASE_VALUES = {
    "state": TicketState.ASSIGNED.value,
    "claim_token": _b("token"),
    "claim_expires_at": _b("expires"),
    "claimed_by_agent_id": _b("agent"),
    "claimed_at": _b("now"),
    "updated_at": _b("now"),
}


@lru_cache(maxsize=8)
def ready_candidate(has_role: bool, has_project: bool) -> sa.Select[Any]:
    # `updated_at` of a ready ticket is when it became ready: every change
    # that makes a ticket ready sets it.
    return _candidates(has_role, has_project, T.c.updated_at.label("ready_since")).where(
        T.c.state == TicketState.READY.value
    )


@lru_cache(maxsize=8)
def claim_ready(has_role: bool, has_project: bool) -> sa.Update:
    """The claim on PostgreSQL: one locking subquery feeding one
    UPDATE ... FROM ... RETURNING, which also returns when the ticket became
    ready. (SQLite's RETURNING sees only the updated table: there the claim
    selects its candidate first, inside its BEGIN IMMEDIATE transaction, and
    leases it with LEASE_TICKET.)"""
    candidate = ready_candidate(has_role, has_project).subquery("candidate")
    return (
        sa.update(T)
        .where(T.c.id == candidate.c.id)
        .values(_LEASE_VALUES)
        .returning(*T.c, candidate.c.ready_since)
    )


LEASE_TICKET = sa.update(T).where(T.c.id == _b("ticket_id")).values(_LEASE_VALUES).returning(*T.c)


@lru_cache(maxsize=8)
def expired_candidate(has_role: bool, has_project: bool) -> sa.Select[Any]:
    # A lease whose loss would reach max_failures is left to the reaper,
    # which quarantines instead of handing the ticket out again.
    return _candidates(has_role, has_project, T.c.claimed_by_agent_id, T.c.state, T.c.claim_expires_at).where(
        T.c.state.in_(LEASED),
        T.c.claim_expires_at < _b("now"),
        T.c.failure_count + 1 < _b("max_failures"),
    )


RESCUE = (
    sa.update(T)
    .where(T.c.id == _b("ticket_id"))
    .values(
        {
            **_LEASE_VALUES,
            "failure_count": T.c.failure_count + 1,
            "last_failure_at": _b("now"),
            "last_failure_reason": _b("reason"),
        }
    )
    .returning(*T.c)
)

LOCK_TICKET = sa.select(T).where(T.c.tenant_id == _b("tenant"), T.c.id == _b("ticket_id")).with_for_update()


@lru_cache(maxsize=32)
def _update(columns: tuple[str, ...]) -> sa.Update:
    return (
        sa.update(T)
        .where(T.c.id == _b("ticket_id"))
        .values({c: _b(f"v_{c}") for c in columns})
        .returning(*T.c)
    )


def update_ticket(conn: Connection, ticket_id: str, values: dict[str, Any]) -> Ticket:
    """Set `values` on one ticket (a cached UPDATE ... RETURNING per column set)."""
    params = {f"v_{c}": v for c, v in values.items()}
    params["ticket_id"] = ticket_id
    ticket = to_ticket(conn.execute(_update(tuple(sorted(values))), params).one())
    ready.changed(conn, ticket)
    return ticket


UNBLOCK_CHILDREN = (
    sa.update(T)
    .where(
        T.c.id.in_(
            sa.select(ticket_dependencies.c.ticket_id).where(
                ticket_dependencies.c.depends_on_id == _b("parent")
            )
        )
    )
    .values(
        pending_parents=T.c.pending_parents - 1,
        # SET expressions see the old row: 1 pending means this was the last.
        state=sa.case(
            (
                sa.and_(T.c.pending_parents == 1, T.c.state == TicketState.BLOCKED.value),
                TicketState.READY.value,
            ),
            else_=T.c.state,
        ),
        updated_at=_b("now"),
    )
    .returning(T.c.id, T.c.state, T.c.tenant_id, T.c.project_id, T.c.role)
)
