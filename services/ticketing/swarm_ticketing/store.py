"""Projects, reads and the dead-letter queue, on SQLite and PostgreSQL.

Lease transitions (claim, renew, submit, fail, release, reap) live in
`leases.py`; both share the row conversion in `rows.py` and record audit and
outbox rows through `journal.py` inside the same transaction.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from opentelemetry import propagate
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_ticketing import journal
from swarm_ticketing.domain import (
    ActorType,
    AgentRole,
    EventType,
    Project,
    ProjectSpec,
    Ticket,
    TicketEvent,
    TicketState,
    validate_project,
)
from swarm_ticketing.journal import AuditEntry
from swarm_ticketing.quota import TicketQuota
from swarm_ticketing.rows import encode_stages, load_tickets, to_ticket
from swarm_ticketing.tables import audit_events, projects, ticket_dependencies, tickets
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition, NotFound
from swarmcommon.pagination import Page, PageToken

T = tickets


def ticket_not_found(ticket_id: str) -> NotFound:
    return NotFound(f"ticket {ticket_id} not found", resource_type="ticket", resource_name=ticket_id)


def keyset_after(columns: Sequence[Any], key: Sequence[Any] | None) -> Any:
    """Rows strictly after `key` in the order of `columns` (a row-value compare)."""
    if key is None:
        return sa.true()
    return sa.tuple_(*columns) > sa.tuple_(*(sa.literal(v) for v in key))


def _iso(value: datetime) -> str:
    return value.isoformat()


class TicketStore:
    def __init__(self, db: Database, clock: Clock, quota: TicketQuota | None = None) -> None:
        self.db = db
        self.clock = clock
        # None: no quota service configured (embedded single-tenant use).
        self.quota = quota

    # -- projects -----------------------------------------------------------

    def create_project(self, spec: ProjectSpec) -> tuple[Project, list[Ticket]]:
        validate_project(spec)
        if spec.request_id:
            existing = self._project_by_request(spec.tenant_id, spec.request_id)
            if existing:
                return existing
        if self.quota is not None:
            # All or nothing, before anything is written. Keyed on the
            # project's request_id so a retried create is charged once.
            charge_id = f"create-project:{spec.request_id}" if spec.request_id else str(uuid.uuid4())
            self.quota.charge_tickets(spec.tenant_id, len(spec.tickets), charge_id)
        try:
            return self.db.transaction(lambda conn: self._insert_project(conn, spec))
        except IntegrityError:
            # A concurrent retry with the same request_id won the race.
            if spec.request_id:
                existing = self._project_by_request(spec.tenant_id, spec.request_id)
                if existing:
                    return existing
            raise

    def _project_by_request(self, tenant_id: str, request_id: str) -> tuple[Project, list[Ticket]] | None:
        def read(conn: Connection) -> tuple[Project, list[Ticket]] | None:
            row = conn.execute(
                sa.select(projects.c.id).where(
                    projects.c.tenant_id == tenant_id,
                    projects.c.request_id == request_id,
                )
            ).first()
            if row is None:
                return None
            project = self._load_project(conn, tenant_id, row.id)
            rows = conn.execute(sa.select(T).where(T.c.project_id == row.id).order_by(T.c.ordinal)).all()
            return project, load_tickets(rows)

        return self.db.transaction(read, write=False)

    def _insert_project(self, conn: Connection, spec: ProjectSpec) -> tuple[Project, list[Ticket]]:
        now = self.clock.now()
        project_id = str(uuid.uuid4())
        ids = {t.key: str(uuid.uuid4()) for t in spec.tickets}
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the creating request's trace becomes the tickets' trace
        children = Counter(dep for t in spec.tickets for dep in t.depends_on)
        conn.execute(
            sa.insert(projects).values(
                id=project_id,
                tenant_id=spec.tenant_id,
                name=spec.name,
                description=spec.description,
                ticket_count=len(spec.tickets),
                repository=spec.repository,
                base_branch=spec.base_branch,
                request_id=spec.request_id,
                created_at=now,
            )
        )
        conn.execute(
            sa.insert(T),
            [
                {
                    "id": ids[t.key],
                    "tenant_id": spec.tenant_id,
                    "project_id": project_id,
                    "ordinal": i,
                    "name": t.name,
                    "description": t.description,
                    "type": t.type.value,
                    "priority": t.priority,
                    "state": TicketState.BLOCKED if t.depends_on else TicketState.READY,
                    "stages": encode_stages(t.stages),
                    "stage_index": 0,
                    "role": t.stages[0].value,
                    "pending_parents": len(t.depends_on),
                    "parent_ids": ",".join(ids[dep] for dep in t.depends_on),
                    "child_count": children[t.key],
                    "failure_count": 0,
                    "traceparent": carrier.get("traceparent"),
                    "repository": spec.repository,
                    "base_branch": spec.base_branch,
                    "created_at": now,
                    "updated_at": now,
                }
                for i, t in enumerate(spec.tickets)
            ],
        )
        edges = [
            {"ticket_id": ids[t.key], "depends_on_id": ids[dep]} for t in spec.tickets for dep in t.depends_on
        ]
        if edges:
            conn.execute(sa.insert(ticket_dependencies), edges)
        rows = conn.execute(sa.select(T).where(T.c.project_id == project_id).order_by(T.c.ordinal)).all()
        created = load_tickets(rows)
        journal.record(
            conn,
            now,
            [
                AuditEntry(
                    spec.tenant_id,
                    t.id,
                    "created",
                    ActorType.SYSTEM,
                    new_value={"state": t.state.value, "project_id": project_id},
                )
                for t in created
            ],
            [journal.ticket_event(EventType.CREATED, t, depends_on=list(t.depends_on)) for t in created],
        )
        project = Project(
            project_id,
            spec.tenant_id,
            spec.name,
            spec.description,
            len(created),
            0,
            now,
            spec.repository,
            spec.base_branch,
        )
        return project, created

    def get_project(self, tenant_id: str, project_id: str) -> Project:
        return self.db.transaction(lambda conn: self._load_project(conn, tenant_id, project_id), write=False)

    def _load_project(self, conn: Connection, tenant_id: str, project_id: str) -> Project:
        row = conn.execute(
            self._project_query().where(projects.c.tenant_id == tenant_id, projects.c.id == project_id)
        ).first()
        if row is None:
            raise NotFound(
                f"project {project_id} not found",
                resource_type="project",
                resource_name=project_id,
            )
        return self._to_project(row)

    @staticmethod
    def _project_query() -> sa.Select[Any]:
        done = (
            sa.select(sa.func.count())
            .where(T.c.project_id == projects.c.id, T.c.state == TicketState.DONE.value)
            .scalar_subquery()
        )
        return sa.select(projects, done.label("done_count"))

    @staticmethod
    def _to_project(row: Any) -> Project:
        m = row._mapping
        return Project(
            m["id"],
            m["tenant_id"],
            m["name"],
            m["description"],
            m["ticket_count"],
            m["done_count"],
            m["created_at"],
            m["repository"],
            m["base_branch"],
        )

    def list_projects(self, tenant_id: str, page_size: int, page_token: str) -> Page[Project]:
        token = PageToken(["projects", tenant_id])
        key = token.decode(page_token, (datetime, str))
        order = [projects.c.created_at, projects.c.id]
        query = (
            self._project_query()
            .where(projects.c.tenant_id == tenant_id, keyset_after(order, key))
            .order_by(*order)
            .limit(page_size + 1)
        )
        rows = self.db.transaction(lambda conn: conn.execute(query).all(), write=False)
        items = [self._to_project(r) for r in rows[:page_size]]
        more = len(rows) > page_size
        nxt = token.encode([_iso(items[-1].created_at), items[-1].id]) if more else ""
        return Page(items, nxt)

    # -- tickets ------------------------------------------------------------

    def get_ticket(self, tenant_id: str, ticket_id: str) -> Ticket:
        def read(conn: Connection) -> Ticket:
            row = conn.execute(sa.select(T).where(T.c.tenant_id == tenant_id, T.c.id == ticket_id)).first()
            if row is None:
                raise ticket_not_found(ticket_id)
            return to_ticket(row)

        return self.db.transaction(read, write=False)

    def list_tickets(
        self,
        tenant_id: str,
        *,
        project_id: str | None,
        state: TicketState | None,
        role: AgentRole | None,
        page_size: int,
        page_token: str,
    ) -> Page[Ticket]:
        token = PageToken(["tickets", tenant_id, project_id, state, role])
        key = token.decode(page_token, (datetime, int, str))
        order = [T.c.created_at, T.c.ordinal, T.c.id]
        query = sa.select(T).where(T.c.tenant_id == tenant_id, keyset_after(order, key))
        if project_id:
            query = query.where(T.c.project_id == project_id)
        if state:
            query = query.where(T.c.state == state.value)
        if role:
            query = query.where(T.c.role == role.value)
        query = query.order_by(*order).limit(page_size + 1)

        def read(conn: Connection) -> Page[Ticket]:
            rows = conn.execute(query).all()
            nxt = ""
            if len(rows) > page_size:
                last = rows[page_size - 1]
                nxt = token.encode([_iso(last.created_at), last.ordinal, last.id])
            return Page(load_tickets(rows[:page_size]), nxt)

        return self.db.transaction(read, write=False)

    def list_ticket_events(
        self, tenant_id: str, ticket_id: str, page_size: int, page_token: str
    ) -> Page[TicketEvent]:
        token = PageToken(["events", tenant_id, ticket_id])
        key = token.decode(page_token, (int,))
        a = audit_events

        def read(conn: Connection) -> list[Any]:
            exists = conn.execute(
                sa.select(T.c.id).where(T.c.tenant_id == tenant_id, T.c.id == ticket_id)
            ).first()
            if exists is None:
                raise ticket_not_found(ticket_id)
            return list(
                conn.execute(
                    sa.select(a)
                    .where(
                        a.c.tenant_id == tenant_id,
                        a.c.ticket_id == ticket_id,
                        keyset_after([a.c.seq], key),
                    )
                    .order_by(a.c.seq)
                    .limit(page_size + 1)
                ).all()
            )

        rows = self.db.transaction(read, write=False)
        items = [
            TicketEvent(
                id=r.id,
                ticket_id=r.ticket_id,
                event_type=r.event_type,
                actor_type=ActorType(r.actor_type),
                actor_id=r.actor_id,
                old_value=r.old_value,
                new_value=r.new_value,
                rationale=r.rationale,
                created_at=r.created_at,
            )
            for r in rows[:page_size]
        ]
        nxt = token.encode([rows[page_size - 1].seq]) if len(rows) > page_size else ""
        return Page(items, nxt)

    # -- dead-letter queue ----------------------------------------------------

    def list_dead_letters(
        self, tenant_id: str, project_id: str | None, page_size: int, page_token: str
    ) -> Page[Ticket]:
        token = PageToken(["dlq", tenant_id, project_id])
        key = token.decode(page_token, (datetime, str))
        order = [T.c.quarantined_at, T.c.id]
        query = sa.select(T).where(
            T.c.tenant_id == tenant_id,
            T.c.state == TicketState.QUARANTINED.value,
            keyset_after(order, key),
        )
        if project_id:
            query = query.where(T.c.project_id == project_id)
        query = query.order_by(*order).limit(page_size + 1)

        def read(conn: Connection) -> Page[Ticket]:
            rows = conn.execute(query).all()
            nxt = ""
            if len(rows) > page_size:
                last = rows[page_size - 1]
                nxt = token.encode([_iso(last.quarantined_at), last.id])
            return Page(load_tickets(rows[:page_size]), nxt)

        return self.db.transaction(read, write=False)

    def redrive(self, tenant_id: str, ticket_ids: Sequence[str], operator: str, reason: str) -> list[Ticket]:
        """Quarantined tickets back to READY with a fresh failure count.

        All or nothing: an unknown id is NOT_FOUND and a ticket that is not
        quarantined is FAILED_PRECONDITION, and then nothing changes.
        """

        def tx(conn: Connection) -> list[Ticket]:
            now = self.clock.now()
            rows = conn.execute(
                sa.select(T.c.id, T.c.state, T.c.failure_count)
                .where(T.c.tenant_id == tenant_id, T.c.id.in_(ticket_ids))
                .with_for_update()
            ).all()
            found = {r.id: r for r in rows}
            for ticket_id in ticket_ids:
                if ticket_id not in found:
                    raise ticket_not_found(ticket_id)
                if found[ticket_id].state != TicketState.QUARANTINED:
                    raise FailedPrecondition(
                        f"ticket {ticket_id} is {found[ticket_id].state}, not quarantined; only "
                        "quarantined tickets can be redriven"
                    )
            conn.execute(
                sa.update(T)
                .where(T.c.id.in_(ticket_ids))
                .values(
                    state=TicketState.READY.value,
                    failure_count=0,
                    quarantined_at=None,
                    quarantine_reason=None,
                    updated_at=now,
                )
            )
            journal.record(
                conn,
                now,
                [
                    AuditEntry(
                        tenant_id,
                        ticket_id,
                        "redriven",
                        ActorType.HUMAN,
                        actor_id=operator,
                        old_value={
                            "state": "quarantined",
                            "failure_count": found[ticket_id].failure_count,
                        },
                        new_value={"state": "ready", "failure_count": 0},
                        rationale=reason or None,
                    )
                    for ticket_id in ticket_ids
                ],
            )
            updated = conn.execute(sa.select(T).where(T.c.id.in_(ticket_ids))).all()
            by_id = {t.id: t for t in load_tickets(updated)}
            return [by_id[i] for i in ticket_ids]

        return self.db.transaction(tx)
