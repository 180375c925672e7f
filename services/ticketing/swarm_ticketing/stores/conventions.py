"""Codebase conventions (seed §13): those a tenant states (per project or
tenant-wide) and those read from a project's repository.

A project's repository is read once, lazily, at the first GetLessons of one
of its tickets: reading git has no place in the project's creation
transaction, and a repository that cannot be read now is read next time.
Git runs outside any transaction; what it showed is written afterwards,
once (`convention_scans`), however many agents ask at the same time.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from swarm_ticketing import learning
from swarm_ticketing.learning import ConventionOrigin, Rule
from swarm_ticketing.learning_tables import convention_scans, conventions
from swarm_ticketing.platform_git import PlatformGit, _branch
from swarm_ticketing.stores import requests
from swarm_ticketing.stores.snapshots import project_row
from swarmcommon import keyset
from swarmcommon import validation as v
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import InvalidArgument, NotFound, SwarmError
from swarmcommon.idempotency import Answer, RequestKey
from swarmcommon.pagination import Page, page_size

log = logging.getLogger(__name__)
C, S = conventions, convention_scans
# Conventions given in one prompt (the budget cuts further).
MAX_RULES = 30


def convention_not_found(convention_id: str) -> NotFound:
    return NotFound(
        f"convention {convention_id} not found", resource_type="convention", resource_name=convention_id
    )


def _scope(project_id: str | None) -> Any:
    return C.c.project_id == project_id if project_id else C.c.project_id.is_(None)


def prompt_rules(conn: Connection, tenant_id: str, project_id: str) -> list[learning.Rule]:
    """The project's conventions, then the tenant-wide ones; stated before inferred."""
    rows = conn.execute(
        sa.select(C)
        .where(C.c.tenant_id == tenant_id, sa.or_(C.c.project_id == project_id, C.c.project_id.is_(None)))
        .order_by(
            sa.case((C.c.project_id.is_(None), 1), else_=0),
            sa.case((C.c.origin == ConventionOrigin.EXPLICIT.value, 0), else_=1),
            C.c.seq,
        )
        .limit(MAX_RULES)
    ).all()
    return [Rule(str(r.id), str(r.category), str(r.content)) for r in rows]


def category(value: str) -> str:
    value = value.strip() or "general"
    if len(value) > learning.MAX_CATEGORY or not all(c.isalnum() or c in "_-" for c in value):
        raise InvalidArgument(
            "category", f"is a short label of letters, digits, _ and - (at most {learning.MAX_CATEGORY})"
        )
    return value


class Conventions:
    def __init__(self, db: Database, clock: Clock, git: PlatformGit | None) -> None:
        self.db = db
        self.clock = clock
        self.git = git

    def project(self, tenant_id: str, project_id: str) -> Row[Any]:
        """The tenant's project (NOT_FOUND for another tenant's)."""
        return self.db.transaction(lambda conn: project_row(conn, tenant_id, project_id), write=False)

    def _project_id(self, tenant_id: str, project_id: str) -> str | None:
        if not project_id:
            return None
        project_id = v.uuid_id("project_id", project_id)
        self.project(tenant_id, project_id)
        return project_id

    def add(
        self, tenant_id: str, project_id: str, label: str, content: str, key: RequestKey | None
    ) -> Row[Any]:
        scope = self._project_id(tenant_id, project_id)
        label = category(label)
        content = v.required_text("content", content, learning.MAX_CONTENT)

        def work(conn: Connection, now: datetime) -> tuple[Row[Any], Answer]:
            made = str(uuid.uuid4())
            conn.execute(
                sa.insert(C).values(
                    id=made,
                    tenant_id=tenant_id,
                    project_id=scope,
                    origin=ConventionOrigin.EXPLICIT.value,
                    category=label,
                    content=content,
                    created_at=now,
                )
            )
            return conn.execute(sa.select(C).where(C.c.id == made)).one(), {"convention_id": made}

        def replay(conn: Connection, answer: Answer) -> Row[Any]:
            row = conn.execute(sa.select(C).where(C.c.id == answer["convention_id"])).first()
            if row is None:
                raise convention_not_found(answer["convention_id"])
            return row

        return requests.LOG.run(self.db, key, self.clock.now, work, replay)

    def page(self, tenant_id: str, project_id: str, size: int, token: str) -> Page[Row[Any]]:
        size = page_size(size)
        scope = self._project_id(tenant_id, project_id)
        query = sa.select(C).where(C.c.tenant_id == tenant_id, _scope(scope))
        filters = ["conventions", tenant_id, scope or ""]
        return keyset.listing(self.db, query, [C.c.seq], filters, size, token, lambda r: r)

    def delete(self, tenant_id: str, convention_id: str, key: RequestKey | None) -> None:
        convention_id = v.uuid_id("convention_id", convention_id)

        def work(conn: Connection, now: datetime) -> tuple[None, Answer]:
            deleted = conn.execute(
                sa.delete(C).where(C.c.tenant_id == tenant_id, C.c.id == convention_id)
            ).rowcount
            if not deleted:
                raise convention_not_found(convention_id)
            return None, {"convention_id": convention_id}

        requests.LOG.run(self.db, key, self.clock.now, work, lambda conn, answer: None)

    # -- inferred -------------------------------------------------------------------------------

    def ensure_inferred(self, tenant_id: str, project_id: str) -> None:
        """Read the project's repository for conventions if it was never read."""
        if self.git is None:
            return

        def known(conn: Connection) -> Row[Any] | None:
            project = project_row(conn, tenant_id, project_id)
            scanned = conn.execute(sa.select(S.c.project_id).where(S.c.project_id == project_id)).first()
            return None if scanned is not None or not project.repository else project

        project = self.db.transaction(known, write=False)
        if project is None:
            return
        try:
            head, found = self._read(project)
        except SwarmError as exc:
            log.warning("conventions of project %s not inferred yet: %s", project_id, exc.message)
            return

        def tx(conn: Connection) -> None:
            now = self.clock.now()
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            marked = conn.execute(
                insert(S)
                .values(project_id=project_id, tenant_id=tenant_id, commit_sha=head, scanned_at=now)
                .on_conflict_do_nothing()
            ).rowcount
            if not marked or not found:
                return  # a concurrent caller wrote them
            conn.execute(
                sa.insert(C),
                [
                    {
                        "id": str(uuid.uuid4()),
                        "tenant_id": tenant_id,
                        "project_id": project_id,
                        "origin": ConventionOrigin.INFERRED.value,
                        "category": label,
                        "content": content,
                        "created_at": now,
                    }
                    for label, content in found
                ],
            )

        self.db.transaction(tx)

    def _read(self, project: Row[Any]) -> tuple[str, list[tuple[str, str]]]:
        """(head commit, conventions) of the project's base branch. Uses the
        platform git's fetch into a temporary bare repository (hooks off,
        the tenant's own repository only: see `platform_git`)."""
        git = self.git
        assert git is not None
        remote = git.remote(project.tenant_id, project.repository)
        branch = _branch(project.base_branch)
        ref = f"refs/heads/{branch}"
        with tempfile.TemporaryDirectory(prefix="swarm-conventions-") as tmp:
            work = Path(tmp)
            git._fetched(remote, work, branch)
            head = git._run(remote, work, "rev-parse", "--verify", "--end-of-options", ref).strip()
            listed = git._run(remote, work, "ls-tree", "-r", "--name-only", "--end-of-options", ref)
            paths = listed.splitlines()

            def read(path: str) -> str:
                if path not in learning.READ_FILES or path not in paths:
                    return ""
                return git._run(remote, work, "show", f"{ref}:{path}")[:200_000]

            return head, learning.infer_conventions(paths, read)
