"""The healing log: every step self-healing takes, newest first, with an
`agent.healed` event for the steps that concern a tenant's agent."""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_vmhost.domain import (
    EventType,
    HealingAction,
    HealingActionType,
    HealingCount,
    HealingFilter,
    HealingOutcome,
    HealingStep,
    HealthCheck,
)
from swarm_vmhost.stores.events import WRITER
from swarm_vmhost.tables import healing_actions
from swarmcommon import keyset
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.outbox import OutboxEvent
from swarmcommon.pagination import Page

H = healing_actions


def _action(m: Any) -> HealingAction:
    step = HealingStep(
        incident_id=m["incident_id"],
        check=HealthCheck(m["check_name"]),
        action=HealingActionType(m["action"]),
        outcome=HealingOutcome(m["outcome"]),
        tenant_id=m["tenant_id"],
        agent_id=m["agent_id"],
        target=m["target"],
        detail=m["detail"],
        error=m["error"],
        ticket_ids=tuple(json.loads(m["ticket_ids"])),
        replacement_agent_id=m["replacement_agent_id"],
    )
    return HealingAction(id=m["id"], step=step, created_at=m["created_at"])


def _action_row(row: Any) -> HealingAction:
    return _action(row._mapping)


def _where(f: HealingFilter) -> list[Any]:
    conditions: list[Any] = []
    for column, value in (
        (H.c.tenant_id, f.tenant_id),
        (H.c.check_name, f.check),
        (H.c.action, f.action),
        (H.c.outcome, f.outcome),
        (H.c.agent_id, f.agent_id),
        (H.c.incident_id, f.incident_id),
    ):
        if value is not None:
            conditions.append(column == value)
    if f.start_time is not None:
        conditions.append(H.c.created_at >= f.start_time)
    if f.end_time is not None:
        conditions.append(H.c.created_at < f.end_time)
    return conditions


class HealingLog:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def record(self, step: HealingStep) -> HealingAction:
        action = HealingAction(id=str(uuid.uuid4()), step=step, created_at=self.clock.now())
        row = {
            "id": action.id,
            "incident_id": step.incident_id,
            "check_name": step.check,
            "action": step.action,
            "outcome": step.outcome,
            "tenant_id": step.tenant_id,
            "agent_id": step.agent_id,
            "target": step.target,
            "detail": step.detail,
            "error": step.error,
            "replacement_agent_id": step.replacement_agent_id,
        }

        def tx(conn: Connection) -> None:
            conn.execute(
                sa.insert(H).values(
                    **row, ticket_ids=json.dumps(list(step.ticket_ids)), created_at=action.created_at
                )
            )
            if step.tenant_id:
                data = {**row, "ticket_ids": list(step.ticket_ids)}
                WRITER.add(conn, [OutboxEvent(step.tenant_id, EventType.HEALED, data)], action.created_at)

        self.db.transaction(tx)
        return action

    def actions(self, f: HealingFilter, page_size: int, page_token: str) -> Page[HealingAction]:
        filters = ["healing", f.tenant_id, f.check, f.action, f.outcome, f.agent_id, f.incident_id,
                   f.start_time, f.end_time]  # fmt: skip
        query = sa.select(H).where(*_where(f))
        return keyset.listing(
            self.db,
            query,
            [H.c.seq],
            filters,
            page_size,
            page_token,
            lambda r: _action(r._mapping),
            descending=True,
        )

    def counts(self, f: HealingFilter) -> list[HealingCount]:
        """How often each (check, action, outcome) happened, for the report."""
        q = (
            sa.select(H.c.check_name, H.c.action, H.c.outcome, sa.func.count())
            .where(*_where(f))
            .group_by(H.c.check_name, H.c.action, H.c.outcome)
            .order_by(H.c.check_name, H.c.action, H.c.outcome)
        )
        rows = self.db.transaction(lambda conn: conn.execute(q).all(), write=False)
        return [
            HealingCount(HealthCheck(c), HealingActionType(a), HealingOutcome(o), int(n))
            for c, a, o, n in rows
        ]
