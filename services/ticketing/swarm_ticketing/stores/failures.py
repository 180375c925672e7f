"""Failure accounting shared by every path that loses a lease: a reported
failure, a vanished agent, an expired lease (claim rescue or reaper).

The rule (domain): each failure counts; the `max_failures`-th quarantines the
ticket with a reason, where only a human redrive brings it back.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Row

from swarm_ticketing.domain import (
    CHECKING_ROLES,
    ActorType,
    AgentRole,
    AuditEvent,
    EventType,
    FailureOutcome,
    QuarantineCause,
    TicketState,
    quarantine_reason,
    rework_index,
)
from swarm_ticketing.stores import ensembles, journal
from swarm_ticketing.stores import statements as stmt
from swarm_ticketing.stores.journal import AuditEntry
from swarm_ticketing.stores.rows import CLEARED_LEASE


def record_failure(
    conn: Connection,
    row: Row[Any],
    now: datetime,
    reason: str,
    max_failures: int,
    *,
    actor: ActorType,
    actor_id: str | None = None,
    details_json: str | None = None,
) -> FailureOutcome:
    """Count one failure on a locked ticket row: back to READY, or quarantined
    once it reaches `max_failures`. Audited and announced in `conn`'s transaction."""
    count = row.failure_count + 1
    quarantined = count >= max_failures
    values: dict[str, Any] = {
        **CLEARED_LEASE,
        "failure_count": count,
        "last_failure_at": now,
        "last_failure_reason": reason,
        "updated_at": now,
        "state": (TicketState.QUARANTINED if quarantined else TicketState.READY).value,
    }
    if quarantined:
        values["quarantined_at"] = now
        values["quarantine_reason"] = quarantine_reason(count, reason)
        values["quarantine_cause"] = QuarantineCause.FAILURES.value
    ticket = stmt.update_ticket(conn, row.id, values)
    audit = [
        failure_audit(
            row.tenant_id, row.id, row.state, row.claimed_by_agent_id, count, reason, actor, actor_id
        )
    ]
    events = [
        journal.ticket_event(
            EventType.FAILED,
            ticket,
            reason=reason,
            agent_id=row.claimed_by_agent_id,
            details=details_json,
        )
    ]
    if quarantined:
        audit.append(
            AuditEntry(
                row.tenant_id,
                row.id,
                AuditEvent.QUARANTINED,
                ActorType.SYSTEM,
                old_value={"state": row.state},
                new_value={"state": TicketState.QUARANTINED.value, "failure_count": count},
                rationale=values["quarantine_reason"],
            )
        )
        events.append(journal.ticket_event(EventType.QUARANTINED, ticket, reason=values["quarantine_reason"]))
    journal.record(conn, now, audit, events)
    if quarantined and row.ensemble_of is not None:
        ensembles.after_attempt(conn, row, now)
    return FailureOutcome(ticket, quarantined)


def failure_audit(
    tenant_id: str,
    ticket_id: str,
    old_state: str,
    holder: str | None,
    failure_count: int,
    reason: str,
    actor: ActorType = ActorType.SYSTEM,
    actor_id: str | None = None,
) -> AuditEntry:
    return AuditEntry(
        tenant_id,
        ticket_id,
        AuditEvent.FAILURE_RECORDED,
        actor,
        actor_id=actor_id,
        old_value={"state": old_state, "agent_id": holder},
        new_value={"failure_count": failure_count},
        rationale=reason,
    )


def transition_audit(
    row: Row[Any],
    event_type: AuditEvent,
    actor: ActorType,
    actor_id: str | None,
    **extra: Any,
) -> AuditEntry:
    return AuditEntry(
        row.tenant_id,
        row.id,
        event_type,
        actor,
        actor_id=actor_id,
        old_value={"state": row.state},
        new_value=extra or None,
    )


def details_of(details_json: str) -> dict[str, Any]:
    try:
        value = json.loads(details_json) if details_json else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def send_back(row: Row[Any], stages: list[str], details_json: str) -> int | None:
    """The stage a checking stage's refusal (`review: rejected`) sends the
    ticket back to: its nearest authoring stage; None for any other failure."""
    if row.role not in CHECKING_ROLES or details_of(details_json).get("review") != "rejected":
        return None
    return rework_index([AgentRole(s) for s in stages], row.stage_index)
