"""Every transition leaves two traces in its own transaction: an audit row
(the seed's `events` table) and, for the seed's event names, an outbox row
the events service will deliver."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_ticketing.domain import ActorType, AuditEvent, EventType, Ticket
from swarm_ticketing.tables import audit_events, outbox
from swarmcommon import metrics
from swarmcommon.outbox import OutboxEvent, OutboxWriter

_writer = OutboxWriter(outbox, source="ticketing")
_INSERT_AUDIT = sa.insert(audit_events)


@dataclass(frozen=True)
class AuditEntry:
    tenant_id: str
    ticket_id: str
    event_type: AuditEvent
    actor_type: ActorType
    actor_id: str | None = None
    old_value: Mapping[str, Any] | None = None
    new_value: Mapping[str, Any] | None = None
    rationale: str | None = None


def _json(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(dict(value), default=str, separators=(",", ":"))


def ticket_event(event_type: EventType, ticket: Ticket, **extra: Any) -> OutboxEvent:
    """An outbox event about a ticket, with the fields integrations key on."""
    data: dict[str, Any] = {
        "ticket_id": ticket.id,
        "project_id": ticket.project_id,
        "title": ticket.name,
        "state": ticket.state.value,
        "stage": ticket.current_role.value,
        "failure_count": ticket.failure_count,
    }
    data.update(extra)
    return OutboxEvent(tenant_id=ticket.tenant_id, event_type=event_type.value, data=data)


def record(
    conn: Connection,
    now: datetime,
    audit: Sequence[AuditEntry],
    events: Sequence[OutboxEvent] = (),
) -> None:
    if audit:
        conn.execute(
            _INSERT_AUDIT,
            [
                {
                    "id": str(uuid.uuid4()),
                    "tenant_id": a.tenant_id,
                    "ticket_id": a.ticket_id,
                    "event_type": a.event_type.value,
                    "actor_type": a.actor_type.value,
                    "actor_id": a.actor_id,
                    "old_value": _json(a.old_value),
                    "new_value": _json(a.new_value),
                    "rationale": a.rationale,
                    "created_at": now,
                }
                for a in audit
            ],
        )
    _writer.add(conn, events, now)
    series = metrics.TICKET_AUDIT_SERIES  # quarantines and redrives, counted if this commits
    metrics.count_on_commit(conn, *(series[a.event_type] for a in audit if a.event_type in series))
