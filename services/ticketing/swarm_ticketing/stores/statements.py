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

from swarm_ticketing.domain import LEASED_STATES, ActorType, AuditEvent, EventType, Ticket, TicketState
from swarm_ticketing.stores import ready
from swarm_ticketing.stores.rows import to_ticket
from swarm_ticketing.tables import audit_events, claim_requests, outbox, ticket_dependencies, tickets

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
    # A new lease has made no progress yet (its claim time stands for it).
    "lease_progress": sa.null(),
    "progressed_at": sa.null(),
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


@lru_cache(maxsize=8)
def claim_and_record(has_role: bool, has_project: bool, has_request: bool) -> sa.Select[Any]:
    """The whole claim on PostgreSQL in ONE statement: data-modifying CTEs
    lease the best ready ticket, write its `assigned` audit row and
    `ticket.assigned` outbox row and, for a claim with a request id, its
    idempotency row, all from the leased row. One round trip instead of four.

    The JSON written here is `journal.ticket_event` / the assigned audit
    entry built by the database: `test_claims` holds the two equal. A
    duplicate request id fails the statement on the claim_requests key, as
    the separate insert did (the caller replays the first claim)."""
    leased = claim_ready(has_role, has_project).cte("leased")
    expires_text = _b("expires_text", type_=sa.Text)
    audited = sa.insert(audit_events).from_select(
        ["id", "tenant_id", "ticket_id", "event_type", "actor_type", "actor_id", "new_value", "created_at"],
        sa.select(
            _b("audit_id", type_=sa.String),
            leased.c.tenant_id,
            leased.c.id,
            _const(AuditEvent.ASSIGNED.value),
            _const(ActorType.AGENT.value),
            _b("agent", type_=sa.String),
            _json_text("stage", leased.c.role, "lease_expires_at", expires_text),
            leased.c.updated_at,
        ),
    )
    evented = sa.insert(outbox).from_select(
        ["event_id", "tenant_id", "event_type", "source", "payload", "traceparent", "created_at"],
        sa.select(
            _b("event_id", type_=sa.String),
            leased.c.tenant_id,
            _const(EventType.ASSIGNED.value),
            _const("ticketing"),
            _json_text(
                "ticket_id",
                leased.c.id,
                "project_id",
                leased.c.project_id,
                "title",
                leased.c.name,
                "state",
                leased.c.state,
                "stage",
                leased.c.role,
                "failure_count",
                leased.c.failure_count,
                "agent_id",
                _b("agent", type_=sa.String),
                "lease_expires_at",
                expires_text,
            ),
            _b("outbox_traceparent", type_=sa.String),
            leased.c.updated_at,
        ),
    )
    ctes = [audited.cte("audited"), evented.cte("evented")]
    if has_request:
        ctes.append(
            sa.insert(claim_requests)
            .from_select(
                [
                    "tenant_id",
                    "agent_id",
                    "request_id",
                    "ticket_id",
                    "claim_token",
                    "expires_at",
                    "created_at",
                    "fingerprint",
                ],
                sa.select(
                    leased.c.tenant_id,
                    _b("agent", type_=sa.String),
                    _b("request_id", type_=sa.String),
                    leased.c.id,
                    leased.c.claim_token,
                    leased.c.claim_expires_at,
                    leased.c.updated_at,
                    _b("fingerprint", type_=sa.String),
                ),
            )
            .cte("requested")
        )
    return sa.select(leased).add_cte(*ctes)


def _json_text(*pairs: Any) -> sa.ColumnElement[str]:
    built = sa.func.json_build_object(*(_const(p) if isinstance(p, str) else p for p in pairs))
    return sa.cast(built, sa.Text)


def _const(word: str) -> sa.ColumnElement[str]:
    """One of our own names as an SQL string literal, inline in the statement
    (bound literals inside DML CTEs lose their values in SQLAlchemy's cache)."""
    if not word.replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"not a plain name: {word!r}")
    return sa.literal_column(f"'{word}'", sa.Text)


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
