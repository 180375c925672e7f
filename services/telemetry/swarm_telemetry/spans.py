"""Spans by tenant, ticket and agent: intake, the ticket trace tree, search."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from swarm_telemetry.tables import spans
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import NotFound
from swarmcommon.pagination import Page, PageToken

S = spans
INSERT_CHUNK = 500


@dataclass
class SpanRow:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    status: int
    status_message: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    service_name: str
    tenant_id: str
    ticket_id: str
    agent_id: str
    depth: int = 0
    share_of_total: float = 0.0
    children: list[SpanRow] = field(default_factory=list, repr=False)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


def _row(r: Any) -> SpanRow:
    m = r._mapping
    return SpanRow(
        trace_id=m["trace_id"],
        span_id=m["span_id"],
        parent_span_id=m["parent_span_id"],
        name=m["name"],
        kind=m["kind"],
        status=m["status"],
        status_message=m["status_message"],
        start_ns=m["start_ns"],
        end_ns=m["end_ns"],
        attributes=json.loads(m["attributes"]),
        events=json.loads(m["events"]),
        service_name=m["service_name"],
        tenant_id=m["tenant_id"],
        ticket_id=m["ticket_id"],
        agent_id=m["agent_id"],
    )


@dataclass
class TicketTrace:
    ticket_id: str
    trace_ids: list[str]
    start_ns: int
    end_ns: int
    spans: list[SpanRow]


class SpanStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._insert = postgresql.insert if db.is_postgres else sqlite.insert

    def ingest(self, rows: Sequence[dict[str, Any]]) -> int:
        """Store spans; one already stored (a re-sent export) is skipped.

        Only some spans say whose they are (`swarm.*` attributes, usually on
        the agent's `agent.work`); their descendants inherit tenant, ticket
        and agent, whichever arrives first: exporters send children before
        their parents."""
        if not rows:
            return 0
        now = self.clock.now()
        batch = {(r["trace_id"], r["span_id"]): dict(r, received_at=now) for r in rows}

        def tx(conn: Connection) -> int:
            self._inherit_from_parents(conn, batch)
            stored = 0
            values = list(batch.values())
            for i in range(0, len(values), INSERT_CHUNK):
                stmt = self._insert(S).values(values[i : i + INSERT_CHUNK])
                stmt = stmt.on_conflict_do_nothing(index_elements=["trace_id", "span_id"])
                stored += conn.execute(stmt).rowcount
            self._hand_down(conn, [r for r in values if r["ticket_id"]])
            return stored

        return int(self.db.transaction(tx))

    @staticmethod
    def _inherit_from_parents(conn: Connection, batch: dict[tuple[str, str], dict[str, Any]]) -> None:
        orphans = [r for r in batch.values() if not r["ticket_id"] and r["parent_span_id"]]
        if not orphans:
            return
        wanted = {(r["trace_id"], r["parent_span_id"]) for r in orphans} - set(batch)
        stored: dict[tuple[str, str], Any] = {}
        if wanted:
            found = conn.execute(
                sa.select(S.c.trace_id, S.c.span_id, S.c.tenant_id, S.c.ticket_id, S.c.agent_id).where(
                    sa.tuple_(S.c.trace_id, S.c.span_id).in_(list(wanted))
                )
            ).all()
            stored = {(f.trace_id, f.span_id): f._mapping for f in found}
        changed = True
        while changed:  # parents later in the batch than their children
            changed = False
            for r in orphans:
                if r["ticket_id"]:
                    continue
                key = (r["trace_id"], r["parent_span_id"])
                parent = batch.get(key) or stored.get(key)
                if parent is not None and parent["ticket_id"] and r["tenant_id"] in ("", parent["tenant_id"]):
                    r["tenant_id"] = parent["tenant_id"]
                    r["ticket_id"] = parent["ticket_id"]
                    r["agent_id"] = r["agent_id"] or parent["agent_id"]
                    changed = True

    @staticmethod
    def _hand_down(conn: Connection, owned: list[dict[str, Any]]) -> None:
        """Give owned spans' stored descendants (children that came first) their ticket."""
        owners = {
            (r["trace_id"], r["span_id"]): (r["tenant_id"], r["ticket_id"], r["agent_id"]) for r in owned
        }
        for _ in range(64):  # deeper trees than this are not real traces
            if not owners:
                return
            # Usually none: children normally come in the same export as their parent.
            waiting = conn.execute(
                sa.select(
                    S.c.seq, S.c.trace_id, S.c.span_id, S.c.parent_span_id, S.c.tenant_id, S.c.agent_id
                ).where(S.c.ticket_id == "", sa.tuple_(S.c.trace_id, S.c.parent_span_id).in_(list(owners)))
            ).all()
            nxt = {}
            for w in waiting:
                tenant, ticket, agent = owners[(w.trace_id, w.parent_span_id)]
                if w.tenant_id not in ("", tenant):
                    continue  # another tenant's span under ours: never adopted
                agent = w.agent_id or agent
                conn.execute(
                    sa.update(S)
                    .where(S.c.seq == w.seq)
                    .values(tenant_id=tenant, ticket_id=ticket, agent_id=agent)
                )
                nxt[(w.trace_id, w.span_id)] = (tenant, ticket, agent)
            owners = nxt

    def ticket_trace(self, tenant_id: str, ticket_id: str) -> TicketTrace:
        """The ticket's spans as a tree: every span of the traces its spans
        are in, minus branches that belong to another ticket or tenant."""

        def read(conn: Connection) -> list[SpanRow]:
            trace_ids = sa.select(S.c.trace_id).where(S.c.tenant_id == tenant_id, S.c.ticket_id == ticket_id)
            rows = conn.execute(
                sa.select(S).where(S.c.trace_id.in_(trace_ids.distinct())).order_by(S.c.start_ns)
            ).all()
            return [_row(r) for r in rows]

        candidates = self.db.transaction(read, write=False)
        if not candidates:
            raise NotFound(
                f"no trace for ticket {ticket_id}", resource_type="ticket", resource_name=ticket_id
            )
        by_id = {(s.trace_id, s.span_id): s for s in candidates}

        def ticket_of(s: SpanRow) -> str | None:
            """The ticket of the nearest ancestor-or-self that names one; ""
            for the shared trunk (up to a root naming none); None for a span
            cut off from its root (a parent never arrived) that names no
            ticket: whose it is cannot be told, so it is not shown."""
            node: SpanRow | None = s
            for _ in range(10_000):
                if node is None:
                    return None
                if node.ticket_id:
                    return node.ticket_id
                if not node.parent_span_id:
                    return ""
                node = by_id.get((node.trace_id, node.parent_span_id))
            return None

        # Spans of the shared trunk (say, the request that created the
        # project) belong to no ticket; branches under another ticket, or
        # spans another tenant sent, are not ours.
        kept = [s for s in candidates if s.tenant_id in ("", tenant_id) and ticket_of(s) in ("", ticket_id)]
        return self._tree(ticket_id, kept)

    @staticmethod
    def _tree(ticket_id: str, kept: list[SpanRow]) -> TicketTrace:
        start = min(s.start_ns for s in kept)
        end = max(s.end_ns for s in kept)
        total = max(end - start, 1)
        ids = {(s.trace_id, s.span_id) for s in kept}
        roots: list[SpanRow] = []
        for s in kept:
            s.children = []
        index = {(s.trace_id, s.span_id): s for s in kept}
        for s in kept:  # already in start order, so children end up ordered too
            parent = (s.trace_id, s.parent_span_id)
            if s.parent_span_id and parent in ids:
                index[parent].children.append(s)
            else:
                roots.append(s)
        ordered: list[SpanRow] = []
        stack = [(r, 0) for r in reversed(roots)]
        while stack:
            node, depth = stack.pop()
            node.depth = depth
            node.share_of_total = node.duration_ns / total
            ordered.append(node)
            stack.extend((c, depth + 1) for c in reversed(node.children))
        trace_ids = list(dict.fromkeys(s.trace_id for s in kept))
        return TicketTrace(ticket_id, trace_ids, start, end, ordered)

    def list_spans(
        self,
        tenant_id: str,
        *,
        trace_id: str | None,
        ticket_id: str | None,
        agent_id: str | None,
        name: str | None,
        status: int | None,
        min_duration_ns: int | None,
        start_ns: int | None,
        end_ns: int | None,
        page_size: int,
        page_token: str,
    ) -> Page[SpanRow]:
        token = PageToken(
            [
                "spans",
                tenant_id,
                trace_id,
                ticket_id,
                agent_id,
                name,
                status,
                min_duration_ns,
                start_ns,
                end_ns,
            ]
        )
        key = token.decode(page_token, (int, int))
        query = sa.select(S).where(S.c.tenant_id == tenant_id)
        for column, wanted in (
            (S.c.trace_id, trace_id),
            (S.c.ticket_id, ticket_id),
            (S.c.agent_id, agent_id),
            (S.c.name, name),
            (S.c.status, status),
        ):
            if wanted is not None:
                query = query.where(column == wanted)
        if min_duration_ns is not None:
            query = query.where(S.c.end_ns - S.c.start_ns >= min_duration_ns)
        if start_ns is not None:
            query = query.where(S.c.start_ns >= start_ns)
        if end_ns is not None:
            query = query.where(S.c.start_ns < end_ns)
        if key is not None:
            query = query.where(sa.tuple_(S.c.start_ns, S.c.seq) < sa.tuple_(key[0], key[1]))
        query = query.order_by(S.c.start_ns.desc(), S.c.seq.desc()).limit(page_size + 1)
        rows = self.db.transaction(lambda conn: conn.execute(query).all(), write=False)
        items = [_row(r) for r in rows[:page_size]]
        last = rows[page_size - 1] if len(rows) > page_size else None
        return Page(items, token.encode([last.start_ns, last.seq]) if last is not None else "")

    def purge(self, older_than: timedelta) -> int:
        cutoff: datetime = self.clock.now() - older_than
        return int(
            self.db.transaction(
                lambda conn: conn.execute(sa.delete(S).where(S.c.received_at < cutoff)).rowcount
            )
        )
