"""What happened to a project as a whole, for its owner to read: its
rollbacks (each step's time, what it cancelled and closed, the head it
discarded) and its audit trail (the seed's `events` rows with no ticket:
`project_rollback`, …), newest first."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row

from swarm_ticketing.snapshot_tables import project_audit_events, project_rollbacks
from swarm_ticketing.stores.rollbacks import ProjectRollback, to_rollback
from swarm_ticketing.stores.snapshots import project_row
from swarmcommon import keyset
from swarmcommon import validation as v
from swarmcommon.db import Database
from swarmcommon.pagination import Page, page_size

R = project_rollbacks
A = project_audit_events


@dataclass(frozen=True)
class ProjectAuditEvent:
    id: str
    project_id: str
    event_type: str
    actor_type: str
    actor_id: str | None
    details: dict[str, Any]
    rationale: str | None
    created_at: datetime


def to_audit_event(row: Row[Any]) -> ProjectAuditEvent:
    m = row._mapping
    return ProjectAuditEvent(
        id=m["id"],
        project_id=m["project_id"],
        event_type=m["event_type"],
        actor_type=m["actor_type"],
        actor_id=m["actor_id"],
        details=json.loads(m["details"] or "{}"),
        rationale=m["rationale"],
        created_at=m["created_at"],
    )


class ProjectHistory:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _project_id(self, tenant_id: str, project_id: str) -> str:
        """The project's id; NOT_FOUND for another tenant's, like every read."""
        project_id = v.uuid_id("project_id", project_id)
        return str(self.db.transaction(lambda conn: project_row(conn, tenant_id, project_id), write=False).id)

    def rollbacks(self, tenant_id: str, project_id: str, size: int, token: str) -> Page[ProjectRollback]:
        project = self._project_id(tenant_id, project_id)
        query = sa.select(R).where(R.c.tenant_id == tenant_id, R.c.project_id == project)
        filters = ["rollbacks", tenant_id, project]
        return keyset.listing(
            self.db, query, [R.c.seq], filters, page_size(size), token, to_rollback, descending=True
        )

    def audit(self, tenant_id: str, project_id: str, size: int, token: str) -> Page[ProjectAuditEvent]:
        project = self._project_id(tenant_id, project_id)
        query = sa.select(A).where(A.c.tenant_id == tenant_id, A.c.project_id == project)
        filters = ["project-audit", tenant_id, project]
        return keyset.listing(
            self.db, query, [A.c.seq], filters, page_size(size), token, to_audit_event, descending=True
        )
