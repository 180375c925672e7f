"""Agents, the address pool and the healing log, with their events written to
the outbox in the same transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_vmhost.drivers.base import GuestHandle
from swarm_vmhost.tables import addresses, agents, healing_actions, outbox
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition, NotFound, Unavailable
from swarmcommon.outbox import OutboxEvent, OutboxWriter
from swarmcommon.pagination import Page, PageToken

A = agents
LIVE = ("starting", "ready", "busy")
_events = OutboxWriter(outbox, source="vmhost")


@dataclass(frozen=True)
class AgentRecord:
    id: str
    tenant_id: str
    template: str
    role: str
    driver: str
    state: str
    address: str | None
    reservation_id: str | None
    ticket_id: str | None
    state_reason: str | None
    replaces_agent_id: str | None
    handle: GuestHandle | None
    last_heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime
    terminated_at: datetime | None


def _record(row: Any) -> AgentRecord:
    m = row._mapping
    handle = GuestHandle(**json.loads(m["handle"])) if m["handle"] else None
    return AgentRecord(
        id=m["id"],
        tenant_id=m["tenant_id"],
        template=m["template"],
        role=m["role"],
        driver=m["driver"],
        state=m["state"],
        address=m["address"],
        reservation_id=m["reservation_id"],
        ticket_id=m["ticket_id"],
        state_reason=m["state_reason"],
        replaces_agent_id=m["replaces_agent_id"],
        handle=handle,
        last_heartbeat_at=m["last_heartbeat_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        terminated_at=m["terminated_at"],
    )


def agent_event(kind: str, a: AgentRecord, **extra: Any) -> OutboxEvent:
    data = {
        "agent_id": a.id,
        "template": a.template,
        "role": a.role,
        "driver": a.driver,
        "address": a.address,
        **extra,
    }
    return OutboxEvent(a.tenant_id, kind, data)


@dataclass(frozen=True)
class HealingAction:
    id: str
    incident_id: str
    check: str
    action: str
    outcome: str
    tenant_id: str
    agent_id: str
    target: str
    detail: str
    error: str
    ticket_ids: list[str]
    replacement_agent_id: str
    created_at: datetime


class AgentStore:
    def __init__(self, db: Database, clock: Clock, pool: Sequence[str]) -> None:
        self.db = db
        self.clock = clock
        self.pool = list(pool)

    # -- agents -------------------------------------------------------------------------

    def by_request(self, tenant_id: str, request_id: str) -> AgentRecord | None:
        row = self.db.transaction(
            lambda conn: conn.execute(
                sa.select(A).where(A.c.tenant_id == tenant_id, A.c.request_id == request_id)
            ).first(),
            write=False,
        )
        return _record(row) if row else None

    def create(
        self,
        agent_id: str,
        tenant_id: str,
        template: str,
        role: str,
        driver: str,
        reservation_id: str | None,
        request_id: str | None,
        replaces: str | None,
    ) -> AgentRecord:
        """The agent row, STARTING, with an address from the pool. Two spawns
        never get one address: the address is a primary key, and the loser of
        a race simply takes the next free one."""
        for _ in range(len(self.pool) + 1):
            try:
                return self.db.transaction(
                    lambda conn: self._insert(
                        conn,
                        agent_id,
                        tenant_id,
                        template,
                        role,
                        driver,
                        reservation_id,
                        request_id,
                        replaces,
                    )
                )
            except IntegrityError:
                if request_id and self.by_request(tenant_id, request_id):
                    raise
                continue  # someone took the address we picked
        raise Unavailable("could not allocate an address; retry")

    def _insert(
        self,
        conn: Connection,
        agent_id: str,
        tenant_id: str,
        template: str,
        role: str,
        driver: str,
        reservation_id: str | None,
        request_id: str | None,
        replaces: str | None,
    ) -> AgentRecord:
        used = {r.address for r in conn.execute(sa.select(addresses.c.address))}
        free = next((a for a in self.pool if a not in used), None)
        if free is None:
            raise Unavailable(f"the address pool is exhausted ({len(self.pool)} guests on this host)")
        now = self.clock.now()
        conn.execute(sa.insert(addresses).values(address=free, agent_id=agent_id, created_at=now))
        conn.execute(
            sa.insert(A).values(
                id=agent_id,
                tenant_id=tenant_id,
                template=template,
                role=role,
                driver=driver,
                state="starting",
                address=free,
                reservation_id=reservation_id,
                replaces_agent_id=replaces,
                request_id=request_id,
                created_at=now,
                updated_at=now,
            )
        )
        return _record(conn.execute(sa.select(A).where(A.c.id == agent_id)).one())

    def started(self, agent_id: str, handle: GuestHandle) -> AgentRecord:
        def tx(conn: Connection) -> AgentRecord:
            conn.execute(
                sa.update(A)
                .where(A.c.id == agent_id)
                .values(handle=json.dumps(handle.__dict__), updated_at=self.clock.now())
            )
            agent = _record(conn.execute(sa.select(A).where(A.c.id == agent_id)).one())
            _events.add(
                conn,
                [agent_event("agent.started", agent, replaces_agent_id=agent.replaces_agent_id)],
                self.clock.now(),
            )
            return agent

        return self.db.transaction(tx)

    def get(self, tenant_id: str, agent_id: str) -> AgentRecord:
        row = self.db.transaction(
            lambda conn: conn.execute(
                sa.select(A).where(A.c.tenant_id == tenant_id, A.c.id == agent_id)
            ).first(),
            write=False,
        )
        if row is None:
            raise NotFound(f"agent {agent_id} not found", resource_type="agent", resource_name=agent_id)
        return _record(row)

    def get_any(self, agent_id: str) -> AgentRecord:
        row = self.db.transaction(
            lambda conn: conn.execute(sa.select(A).where(A.c.id == agent_id)).one(), write=False
        )
        return _record(row)

    def list_agents(
        self,
        tenant_id: str,
        state: str | None,
        role: str | None,
        template: str | None,
        page_size: int,
        page_token: str,
    ) -> Page[AgentRecord]:
        token = PageToken(["agents", tenant_id, state, role, template])
        key = token.decode(page_token, (datetime, str))
        q = sa.select(A).where(A.c.tenant_id == tenant_id)
        q = q.where(A.c.state == state) if state else q.where(A.c.state != "terminated")
        if role:
            q = q.where(A.c.role == role)
        if template:
            q = q.where(A.c.template == template)
        if key is not None:
            q = q.where(sa.tuple_(A.c.created_at, A.c.id) > sa.tuple_(key[0], key[1]))
        q = q.order_by(A.c.created_at, A.c.id).limit(page_size + 1)
        rows = self.db.transaction(lambda conn: conn.execute(q).all(), write=False)
        items = [_record(r) for r in rows[:page_size]]
        nxt = token.encode([items[-1].created_at.isoformat(), items[-1].id]) if len(rows) > page_size else ""
        return Page(items, nxt)

    def live(self) -> list[AgentRecord]:
        rows = self.db.transaction(
            lambda conn: conn.execute(sa.select(A).where(A.c.state.in_(LIVE))).all(), write=False
        )
        return [_record(r) for r in rows]

    def heartbeat(self, tenant_id: str, agent_id: str, state: str, ticket_id: str | None) -> AgentRecord:
        def tx(conn: Connection) -> AgentRecord:
            row = conn.execute(sa.select(A).where(A.c.tenant_id == tenant_id, A.c.id == agent_id)).first()
            if row is None:
                raise NotFound(f"agent {agent_id} not found", resource_type="agent", resource_name=agent_id)
            if row.state not in LIVE:
                raise FailedPrecondition(
                    f"agent {agent_id} is {row.state} ({row.state_reason}); its leases were released: stop",
                    reason="AGENT_GONE",
                )
            now = self.clock.now()
            conn.execute(
                sa.update(A)
                .where(A.c.id == agent_id)
                .values(state=state, ticket_id=ticket_id, last_heartbeat_at=now, updated_at=now)
            )
            return _record(conn.execute(sa.select(A).where(A.c.id == agent_id)).one())

        return self.db.transaction(tx)

    def fail(self, agent_id: str, reason: str) -> AgentRecord | None:
        """LIVE -> FAILED once; None when it was no longer live."""

        def tx(conn: Connection) -> AgentRecord | None:
            now = self.clock.now()
            changed = conn.execute(
                sa.update(A)
                .where(A.c.id == agent_id, A.c.state.in_(LIVE))
                .values(state="failed", state_reason=reason, updated_at=now)
            ).rowcount
            if not changed:
                return None
            agent = _record(conn.execute(sa.select(A).where(A.c.id == agent_id)).one())
            _events.add(
                conn, [agent_event("agent.failed", agent, reason=reason, ticket_id=agent.ticket_id)], now
            )
            return agent

        return self.db.transaction(tx)

    def stopping(self, agent_id: str, reason: str) -> None:
        """LIVE -> STOPPING before the guest is stopped, so the monitor does not
        take its exit for a crash (a failed agent stays FAILED)."""
        self.db.transaction(
            lambda conn: conn.execute(
                sa.update(A)
                .where(A.c.id == agent_id, A.c.state.in_(LIVE))
                .values(state="stopping", state_reason=reason, updated_at=self.clock.now())
            )
        )

    def terminated(self, agent_id: str, reason: str) -> AgentRecord:
        """TERMINATED, its address back in the pool. Idempotent."""

        def tx(conn: Connection) -> AgentRecord:
            now = self.clock.now()
            row = conn.execute(sa.select(A).where(A.c.id == agent_id)).one()
            if row.state == "terminated":
                return _record(row)
            conn.execute(sa.delete(addresses).where(addresses.c.agent_id == agent_id))
            conn.execute(
                sa.update(A)
                .where(A.c.id == agent_id)
                .values(
                    state="terminated",
                    state_reason=row.state_reason if row.state == "failed" else reason,
                    address=None,
                    ticket_id=None,
                    updated_at=now,
                    terminated_at=now,
                )
            )
            agent = _record(conn.execute(sa.select(A).where(A.c.id == agent_id)).one())
            if row.state != "failed":
                _events.add(conn, [agent_event("agent.completed", agent, reason=reason)], now)
            return agent

        return self.db.transaction(tx)

    # -- healing log --------------------------------------------------------------------------

    def record_action(
        self,
        incident_id: str,
        check: str,
        action: str,
        outcome: str,
        *,
        tenant_id: str = "",
        agent_id: str = "",
        target: str = "",
        detail: str = "",
        error: str = "",
        ticket_ids: Sequence[str] = (),
        replacement_agent_id: str = "",
    ) -> HealingAction:
        now = self.clock.now()
        row = {
            "id": str(uuid.uuid4()),
            "incident_id": incident_id,
            "check_name": check,
            "action": action,
            "outcome": outcome,
            "tenant_id": tenant_id,
            "agent_id": agent_id,
            "target": target,
            "detail": detail,
            "error": error,
            "ticket_ids": json.dumps(list(ticket_ids)),
            "replacement_agent_id": replacement_agent_id,
            "created_at": now,
        }

        def tx(conn: Connection) -> None:
            conn.execute(sa.insert(healing_actions).values(**row))
            if tenant_id:
                data = {k: v for k, v in row.items() if k not in ("created_at", "ticket_ids")}
                data["ticket_ids"] = list(ticket_ids)
                _events.add(conn, [OutboxEvent(tenant_id, "agent.healed", data)], now)

        self.db.transaction(tx)
        return _action(row)

    def actions(
        self,
        tenant_id: str | None,
        filters: dict[str, str],
        since: datetime | None,
        page_size: int,
        page_token: str,
    ) -> Page[HealingAction]:
        h = healing_actions
        token = PageToken(["healing", tenant_id, sorted(filters.items()), since])
        key = token.decode(page_token, (int,))
        q = sa.select(h)
        if tenant_id is not None:
            q = q.where(h.c.tenant_id == tenant_id)
        for column, value in filters.items():
            q = q.where(h.c[column] == value)
        if since is not None:
            q = q.where(h.c.created_at >= since)
        if key is not None:
            q = q.where(h.c.seq < key[0])
        q = q.order_by(h.c.seq.desc()).limit(page_size + 1)
        rows = self.db.transaction(lambda conn: conn.execute(q).all(), write=False)
        nxt = token.encode([rows[page_size - 1].seq]) if len(rows) > page_size else ""
        return Page([_action(r._mapping) for r in rows[:page_size]], nxt)


def _action(m: Any) -> HealingAction:
    return HealingAction(
        id=m["id"],
        incident_id=m["incident_id"],
        check=m["check_name"],
        action=m["action"],
        outcome=m["outcome"],
        tenant_id=m["tenant_id"],
        agent_id=m["agent_id"],
        target=m["target"],
        detail=m["detail"],
        error=m["error"],
        ticket_ids=json.loads(m["ticket_ids"]),
        replacement_agent_id=m["replacement_agent_id"],
        created_at=m["created_at"],
    )
