"""LLM cost caps per ticket: what the LLM proxy asks before a call tagged
with a ticket (does this agent hold its lease, and what cap does ticketing
know), the hold it asks for when the ticket's spend reached its cap, and an
operator's change of a ticket's cap.

The cap in force is the ticket's own, else its project's; when neither is
set the proxy applies the tenant's default (quota). A ticket held for its
budget leaves its agent's lease and waits in the dead-letter queue
(QUARANTINED, cause BUDGET_EXCEEDED) with no failure counted, until an
operator raises its cap and redrives it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_ticketing.domain import (
    LEASED_STATES,
    ActorType,
    AuditEvent,
    CostCapSource,
    EventType,
    QuarantineCause,
    SpendGrant,
    Ticket,
    TicketState,
    budget_reason,
)
from swarm_ticketing.stores import ensembles, journal, requests
from swarm_ticketing.stores import statements as stmt
from swarm_ticketing.stores.journal import AuditEntry
from swarm_ticketing.stores.rows import CLEARED_LEASE
from swarm_ticketing.stores.tickets import load_ticket, lock_ticket, ticket_not_found
from swarm_ticketing.tables import projects, tickets
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition, PermissionDenied
from swarmcommon.idempotency import Answer, RequestKey

T = tickets
P = projects
PROXY_ACTOR = "telemetry/llm-proxy"


def _holder_check(row: Any, ticket_id: str, agent_id: str, now: datetime | None) -> None:
    """Explain why `agent_id` may not spend on the ticket, if it may not;
    `now` None skips the expiry check."""
    if row.state not in LEASED_STATES:
        raise FailedPrecondition(
            f"ticket {ticket_id} is {row.state} and agent {agent_id} holds no lease on it; "
            "an agent spends only on a ticket it holds",
            reason="LEASE_NOT_HELD",
            ticket_id=ticket_id,
            state=row.state,
        )
    if row.claimed_by_agent_id != agent_id:
        raise PermissionDenied(
            f"the lease on ticket {ticket_id} is held by another agent; an agent spends only on its own",
            reason="LEASE_HELD_BY_ANOTHER_AGENT",
            ticket_id=ticket_id,
        )
    if now is not None and row.claim_expires_at <= now:
        raise FailedPrecondition(
            f"lease on ticket {ticket_id} expired at {row.claim_expires_at:%Y-%m-%dT%H:%M:%SZ}",
            reason="LEASE_EXPIRED",
            ticket_id=ticket_id,
        )


class CostCaps:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def authorize(self, tenant_id: str, ticket_id: str, agent_id: str) -> SpendGrant:
        """The ticket and its cap, if `agent_id` holds its live lease."""
        query = (
            sa.select(
                T.c.id,
                T.c.project_id,
                T.c.state,
                T.c.claimed_by_agent_id,
                T.c.claim_expires_at,
                T.c.cost_cap_usd_micros,
                P.c.ticket_cost_cap_usd_micros,
            )
            .join(P, P.c.id == T.c.project_id)
            .where(T.c.tenant_id == tenant_id, T.c.id == ticket_id)
        )
        row = self.db.transaction(lambda conn: conn.execute(query).first(), write=False)
        if row is None:
            raise ticket_not_found(ticket_id)
        _holder_check(row, ticket_id, agent_id, self.clock.now())
        if row.cost_cap_usd_micros is not None:
            return SpendGrant(row.id, row.project_id, row.cost_cap_usd_micros, CostCapSource.TICKET)
        if row.ticket_cost_cap_usd_micros is not None:
            return SpendGrant(row.id, row.project_id, row.ticket_cost_cap_usd_micros, CostCapSource.PROJECT)
        return SpendGrant(row.id, row.project_id, None, None)

    def release_for_budget(
        self,
        tenant_id: str,
        ticket_id: str,
        agent_id: str,
        spent: int,
        cap: int,
        key: RequestKey | None = None,
    ) -> Ticket:
        """End `agent_id`'s lease and hold the ticket for review; no failure counted."""

        def work(conn: Connection, now: datetime) -> tuple[Ticket, Answer]:
            row = lock_ticket(conn, tenant_id, ticket_id)
            # An expired lease the reaper has not taken yet is still the agent's to lose.
            _holder_check(row, ticket_id, agent_id, None)
            reason = budget_reason(spent, cap)
            ticket = stmt.update_ticket(
                conn,
                ticket_id,
                {
                    **CLEARED_LEASE,
                    "state": TicketState.QUARANTINED.value,
                    "quarantined_at": now,
                    "quarantine_reason": reason,
                    "quarantine_cause": QuarantineCause.BUDGET_EXCEEDED.value,
                    "updated_at": now,
                },
            )
            money = {"spent_usd_micros": spent, "cost_cap_usd_micros": cap}
            journal.record(
                conn,
                now,
                [
                    AuditEntry(
                        tenant_id,
                        ticket_id,
                        AuditEvent.BUDGET_EXCEEDED,
                        ActorType.SYSTEM,
                        actor_id=PROXY_ACTOR,
                        old_value={"state": row.state, "agent_id": agent_id},
                        new_value={"state": TicketState.QUARANTINED.value, **money},
                        rationale=reason,
                    )
                ],
                [
                    journal.ticket_event(
                        EventType.BUDGET_EXCEEDED, ticket, agent_id=agent_id, reason=reason, **money
                    )
                ],
            )
            if row.ensemble_of is not None:
                ensembles.after_attempt(conn, row, now)
            return ticket, {}

        return requests.LOG.run(
            self.db, key, self.clock.now, work, lambda conn, _: load_ticket(conn, tenant_id, ticket_id)
        )

    def set_cap(
        self,
        tenant_id: str,
        ticket_id: str,
        cap: int | None,
        operator: str,
        reason: str,
        key: RequestKey | None = None,
    ) -> Ticket:
        """Set (None: clear) a ticket's own cap, audited with the operator and reason."""

        def work(conn: Connection, now: datetime) -> tuple[Ticket, Answer]:
            row = lock_ticket(conn, tenant_id, ticket_id)
            ticket = stmt.update_ticket(conn, ticket_id, {"cost_cap_usd_micros": cap, "updated_at": now})
            journal.record(
                conn,
                now,
                [
                    AuditEntry(
                        tenant_id,
                        ticket_id,
                        AuditEvent.COST_CAP_CHANGED,
                        ActorType.HUMAN,
                        actor_id=operator,
                        old_value={"cost_cap_usd_micros": row.cost_cap_usd_micros},
                        new_value={"cost_cap_usd_micros": cap},
                        rationale=reason or None,
                    )
                ],
            )
            return ticket, {}

        return requests.LOG.run(
            self.db, key, self.clock.now, work, lambda conn, _: load_ticket(conn, tenant_id, ticket_id)
        )
