"""Creating projects (validated, charged, then stored with their tickets in
one transaction) and reading them."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from opentelemetry import propagate
from sqlalchemy.engine import Connection

from swarm_ticketing.dag import plan, validate_project
from swarm_ticketing.domain import (
    ActorType,
    AuditEvent,
    EventType,
    Project,
    ProjectSpec,
    Ticket,
    TicketState,
)
from swarm_ticketing.quota import TicketQuota
from swarm_ticketing.stores import estimates, journal, ready, requests
from swarm_ticketing.stores.journal import AuditEntry
from swarm_ticketing.stores.rows import encode_stages, load_tickets, to_project
from swarm_ticketing.tables import projects, ticket_dependencies, tickets
from swarmcommon import keyset
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import NotFound
from swarmcommon.idempotency import Answer, RequestKey
from swarmcommon.pagination import Page

T = tickets
P = projects
Created = tuple[Project, list[Ticket]]


def _with_done_count() -> sa.Select[Any]:
    done = (
        sa.select(sa.func.count())
        .where(T.c.project_id == P.c.id, T.c.state == TicketState.DONE.value, T.c.ensemble_of.is_(None))
        .scalar_subquery()
    )
    return sa.select(P, done.label("done_count"))


def _load(conn: Connection, tenant_id: str, project_id: str) -> Project:
    row = conn.execute(_with_done_count().where(P.c.tenant_id == tenant_id, P.c.id == project_id)).first()
    if row is None:
        raise NotFound(f"project {project_id} not found", resource_type="project", resource_name=project_id)
    return to_project(row)


def _load_created(conn: Connection, tenant_id: str, project_id: str) -> Created:
    rows = conn.execute(sa.select(T).where(T.c.project_id == project_id).order_by(T.c.ordinal)).all()
    return _load(conn, tenant_id, project_id), load_tickets(rows)


class Projects:
    def __init__(self, db: Database, clock: Clock, quota: TicketQuota | None = None) -> None:
        self.db = db
        self.clock = clock
        # None: no quota service configured (embedded single-tenant use).
        self.quota = quota

    def create(self, spec: ProjectSpec, key: RequestKey | None = None) -> Created:
        """Validate, charge tickets_per_day for every ticket, then store it all.

        Nothing is charged for a project that would be refused, nor for a
        retry (the first call's project is returned); quota's own request id
        makes a charge that raced a retry count once."""
        validate_project(spec)
        prior = self.db.transaction(lambda conn: requests.LOG.lookup(conn, key), write=False)
        if prior is not None:
            return self.db.transaction(
                lambda conn: _load_created(conn, spec.tenant_id, prior["project_id"]), write=False
            )
        if self.quota is not None:
            # An ensemble's attempts are tickets' worth of agent work: charged as tickets.
            stored = sum(t.rows for t in spec.tickets)
            self.quota.charge_tickets(spec.tenant_id, stored, key.request_id if key else None)
        return requests.LOG.run(
            self.db,
            key,
            self.clock.now,
            lambda conn, now: self._insert(conn, spec, key, now),
            lambda conn, outcome: _load_created(conn, spec.tenant_id, outcome["project_id"]),
        )

    def _insert(
        self, conn: Connection, spec: ProjectSpec, key: RequestKey | None, now: datetime
    ) -> tuple[Created, Answer]:
        project_id = str(uuid.uuid4())
        rows = plan(spec)
        ids = {r.key: str(uuid.uuid4()) for r in rows}
        estimated = estimates.at_creation(conn, spec.tenant_id, rows)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the creating request's trace becomes the tickets' trace
        children = Counter(dep for r in rows for dep in r.depends_on)
        conn.execute(
            sa.insert(P).values(
                id=project_id,
                tenant_id=spec.tenant_id,
                name=spec.name,
                description=spec.description,
                ticket_count=len(spec.tickets),
                repository=spec.repository,
                base_branch=spec.base_branch,
                ticket_cost_cap_usd_micros=spec.ticket_cost_cap_usd_micros,
                pattern=spec.pattern.value,
                request_id=key.request_id if key else None,
                created_at=now,
            )
        )
        conn.execute(
            sa.insert(T),
            [
                {
                    "id": ids[r.key],
                    "tenant_id": spec.tenant_id,
                    "project_id": project_id,
                    "ordinal": i,
                    "name": r.name,
                    "description": r.spec.description,
                    "type": r.spec.type.value,
                    "priority": r.spec.priority,
                    "state": (TicketState.BLOCKED if r.pending else TicketState.READY).value,
                    "stages": encode_stages(r.stages),
                    "stage_index": 0,
                    "role": r.stages[0].value,
                    "pending_parents": r.pending,
                    "parent_ids": ",".join(ids[dep] for dep in r.depends_on),
                    "child_count": children[r.key],
                    "failure_count": 0,
                    "traceparent": carrier.get("traceparent"),
                    "repository": spec.repository,
                    "base_branch": spec.base_branch,
                    "cost_cap_usd_micros": r.spec.cost_cap_usd_micros,
                    "pattern": r.spec.pattern.value,
                    "ensemble_of": ids[r.ensemble_of] if r.ensemble_of else None,
                    "attempt": r.attempt,
                    **estimated[r.key],
                    "created_at": now,
                    "updated_at": now,
                }
                for i, r in enumerate(rows)
            ],
        )
        edges = [{"ticket_id": ids[r.key], "depends_on_id": ids[dep]} for r in rows for dep in r.depends_on]
        if edges:
            conn.execute(sa.insert(ticket_dependencies), edges)
        created = _load_created(conn, spec.tenant_id, project_id)
        self._announce(conn, created[1], project_id, now)
        return created, {"project_id": project_id}

    @staticmethod
    def _announce(conn: Connection, created: list[Ticket], project_id: str, now: datetime) -> None:
        for t in created:
            ready.changed(conn, t)
        journal.record(
            conn,
            now,
            [
                AuditEntry(
                    t.tenant_id,
                    t.id,
                    AuditEvent.CREATED,
                    ActorType.SYSTEM,
                    new_value={"state": t.state.value, "project_id": project_id},
                )
                for t in created
            ],
            [journal.ticket_event(EventType.CREATED, t, depends_on=list(t.depends_on)) for t in created],
        )

    def get(self, tenant_id: str, project_id: str) -> Project:
        return self.db.transaction(lambda conn: _load(conn, tenant_id, project_id), write=False)

    def page(self, tenant_id: str, page_size: int, page_token: str) -> Page[Project]:
        query = _with_done_count().where(P.c.tenant_id == tenant_id)
        order = [P.c.created_at, P.c.id]
        return keyset.listing(
            self.db, query, order, ["projects", tenant_id], page_size, page_token, to_project
        )
