"""Learnings (rules in `swarm_ticketing.learning`): made from a ticket's
history in the transaction of its stage change, given to the agent holding
a ticket's lease (GetLessons), credited with the outcome of that lease.

The hooks (`after_failure`, `after_submit`) run inside the lease
transitions' transactions: they take the locked ticket row as it was before
the change (its claim token is the lease the learnings were given to) and
write nothing on a conflict — a concurrent identical learning is refreshed,
never a reason for the stage change to fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from swarm_ticketing import learning
from swarm_ticketing.learning import FLOOR, Draft, Lesson, Section
from swarm_ticketing.learning_tables import learning_uses, learnings
from swarm_ticketing.stores import requests
from swarm_ticketing.stores.conventions import Conventions, prompt_rules
from swarmcommon import keyset
from swarmcommon import validation as v
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import NotFound
from swarmcommon.idempotency import Answer, RequestKey
from swarmcommon.pagination import Page, page_size

if TYPE_CHECKING:  # leases.py calls the hooks here: no import cycle at run time
    from swarm_ticketing.stores.leases import LeaseManager

L, U = learnings, learning_uses
# How many relevant learnings are ranked before the budget cuts them.
CANDIDATES = 40


class Outcome:
    SUCCESS = "success"
    FAILURE = "failure"


def learning_not_found(learning_id: str) -> NotFound:
    return NotFound(f"learning {learning_id} not found", resource_type="learning", resource_name=learning_id)


# -- hooks: called by the lease transitions, in their transaction ------------------------------


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def learn(
    conn: Connection, tenant_id: str, project_id: str | None, ticket_id: str, draft: Draft, now: datetime
) -> str:
    """Make the learning, or refresh the one with its context hash; its id."""
    digest = draft.context_hash
    same = sa.and_(
        L.c.tenant_id == tenant_id,
        L.c.project_id == project_id if project_id is not None else L.c.project_id.is_(None),
        L.c.context_hash == digest,
    )
    conn.execute(
        _insert(conn)(L)
        .values(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            project_id=project_id,
            kind=draft.kind.value,
            source=draft.source.value,
            content=draft.content,
            context_hash=digest,
            ticket_id=ticket_id,
            uses=0,
            successes=0,
            failures=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
    )
    row = conn.execute(sa.select(L.c.id, L.c.created_at).where(same)).one()
    if row.created_at != now:
        conn.execute(sa.update(L).where(L.c.id == row.id).values(updated_at=now, ticket_id=ticket_id))
    return str(row.id)


def credit(conn: Connection, claim_token: str | None, outcome: str) -> int:
    """Count the stage's outcome on each learning its lease was given (once); how many."""
    if not claim_token:
        return 0
    given = [
        str(r.learning_id)
        for r in conn.execute(
            sa.select(U.c.learning_id).where(U.c.claim_token == claim_token, U.c.outcome.is_(None))
        )
    ]
    if not given:
        return 0
    conn.execute(
        sa.update(U).where(U.c.claim_token == claim_token, U.c.outcome.is_(None)).values(outcome=outcome)
    )
    column = L.c.successes if outcome == Outcome.SUCCESS else L.c.failures
    conn.execute(sa.update(L).where(L.c.id.in_(given)).values({column: column + 1}))
    return len(given)


def after_failure(
    conn: Connection, row: Row[Any], reason: str, details_json: str | None, now: datetime
) -> None:
    """A reported failure (a failed stage, a review's rejection, a security
    refusal): credit the lease's learnings with it, and learn from it."""
    credit(conn, row.claim_token, Outcome.FAILURE)
    for draft in learning.from_failure(reason, details_json):
        learn(conn, row.tenant_id, row.project_id, row.id, draft, now)


def after_submit(conn: Connection, row: Row[Any], result_json: str | None, now: datetime) -> None:
    """A submitted stage: credit the lease's learnings with its success, and
    learn from an ensemble judge's rationale (`result_json` as stored, i.e.
    after `ensembles.judged`)."""
    credit(conn, row.claim_token, Outcome.SUCCESS)
    if row.role == "judge":
        for draft in learning.from_judged(result_json):
            learn(conn, row.tenant_id, row.project_id, row.id, draft, now)


# -- retrieval ----------------------------------------------------------------------------------

_SQLITE_SEARCH = sa.text(
    "SELECT l.id, l.kind, l.content FROM learnings_fts JOIN learnings l ON l.seq = learnings_fts.rowid"
    " WHERE learnings_fts MATCH :query AND l.tenant_id = :tenant"
    " AND (l.successes + 1.0) / (l.successes + l.failures + 2) >= :floor"
    " ORDER BY COALESCE(l.project_id = :project, 0) DESC, bm25(learnings_fts), l.seq DESC LIMIT :limit"
)
_POSTGRES_SEARCH = sa.text(
    "SELECT l.id, l.kind, l.content FROM learnings l"
    " WHERE to_tsvector('english', l.content) @@ to_tsquery('english', :query) AND l.tenant_id = :tenant"
    " AND (l.successes + 1.0) / (l.successes + l.failures + 2) >= :floor"
    " ORDER BY COALESCE(l.project_id = :project, false) DESC,"
    " ts_rank(to_tsvector('english', l.content), to_tsquery('english', :query)) DESC, l.seq DESC"
    " LIMIT :limit"
)


def relevant(conn: Connection, tenant_id: str, project_id: str, text: str) -> list[Lesson]:
    """The tenant's learnings matching any word of `text`: the project's
    first, then the rest of the tenant's, each by full-text rank; only those
    at or above the effectiveness floor. Never another tenant's."""
    words = learning.keywords(text)
    if not words:
        return []
    postgres = conn.dialect.name == "postgresql"
    # The words are [a-z0-9_] only (learning.keywords): nothing to escape.
    query = " | ".join(words) if postgres else " OR ".join(f'"{w}"' for w in words)
    rows = conn.execute(
        _POSTGRES_SEARCH if postgres else _SQLITE_SEARCH,
        {"query": query, "tenant": tenant_id, "project": project_id, "floor": FLOOR, "limit": CANDIDATES},
    ).all()
    return [Lesson(str(r.id), str(r.kind), str(r.content)) for r in rows]


def record_uses(conn: Connection, row: Row[Any], learning_ids: Sequence[str], now: datetime) -> None:
    """The lease was given these learnings (a repeated call records nothing new)."""
    known = {
        str(r[0])
        for r in conn.execute(
            sa.select(U.c.learning_id).where(
                U.c.claim_token == row.claim_token, U.c.learning_id.in_(learning_ids)
            )
        )
    }
    new = [i for i in learning_ids if i not in known]
    if not new:
        return
    conn.execute(
        sa.insert(U),
        [
            {
                "claim_token": row.claim_token,
                "learning_id": i,
                "tenant_id": row.tenant_id,
                "ticket_id": row.id,
                "created_at": now,
            }
            for i in new
        ],
    )
    conn.execute(sa.update(L).where(L.c.id.in_(new)).values(uses=L.c.uses + 1))


class Learnings:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        leases: LeaseManager,
        conventions: Conventions,
        budget: int = learning.TOKEN_BUDGET,
    ) -> None:
        self.db = db
        self.clock = clock
        # Its lease check (the same one every lease transition makes).
        self.leases = leases
        self.conventions = conventions
        self.budget = budget

    def lessons(self, tenant_id: str, ticket_id: str, token: str, holder: str | None) -> Section:
        """The prompt section for the ticket whose lease `token` is (`holder`:
        the agent asking, who must hold it), with the uses recorded."""
        # The lease first: only its holder sets off the (once per project) repository read.
        project_id = self.db.transaction(lambda conn: self._held(conn, tenant_id, ticket_id, token, holder))
        self.conventions.ensure_inferred(tenant_id, project_id)

        def tx(conn: Connection) -> Section:
            now = self.clock.now()
            row = self.leases._lock_leased(conn, tenant_id, ticket_id, token, now, holder=holder)
            rules = prompt_rules(conn, tenant_id, row.project_id)
            found = relevant(conn, tenant_id, row.project_id, f"{row.name}\n{row.description or ''}")
            section = learning.prompt_section(rules, found, self.budget)
            record_uses(conn, row, section.learning_ids, now)
            return section

        return self.db.transaction(tx)

    def _held(self, conn: Connection, tenant_id: str, ticket_id: str, token: str, holder: str | None) -> str:
        """The ticket's project, if the lease is held (checked again, locked, when writing)."""
        row = self.leases._lock_leased(conn, tenant_id, ticket_id, token, self.clock.now(), holder=holder)
        return str(row.project_id)

    def page(self, tenant_id: str, project_id: str, size: int, token: str) -> Page[Row[Any]]:
        size = page_size(size)
        project_id = v.uuid_id("project_id", project_id)
        self.conventions.project(tenant_id, project_id)  # NOT_FOUND for another tenant's
        query = sa.select(L).where(L.c.tenant_id == tenant_id, L.c.project_id == project_id)
        filters = ["learnings", tenant_id, project_id]
        return keyset.listing(
            self.db, query, [L.c.updated_at, L.c.seq], filters, size, token, lambda r: r, descending=True
        )

    def delete(self, tenant_id: str, learning_id: str, key: RequestKey | None) -> None:
        learning_id = v.uuid_id("learning_id", learning_id)

        def work(conn: Connection, now: datetime) -> tuple[None, Answer]:
            found = conn.execute(
                sa.select(L.c.id).where(L.c.tenant_id == tenant_id, L.c.id == learning_id)
            ).first()
            if found is None:
                raise learning_not_found(learning_id)
            conn.execute(sa.delete(U).where(U.c.learning_id == learning_id))
            conn.execute(sa.delete(L).where(L.c.id == learning_id))
            return None, {"learning_id": learning_id}

        requests.LOG.run(self.db, key, self.clock.now, work, lambda conn, answer: None)


__all__ = ["Learnings", "after_failure", "after_submit", "credit", "learn"]
