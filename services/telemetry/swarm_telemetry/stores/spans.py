"""Spans by tenant, ticket and agent: storing checked spans (handing the
ticket down to descendants), reading a ticket's traces, search, retention."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from swarm_telemetry.domain import Span, SpanEvent, SpanKind, SpanQuery, SpanStatus
from swarm_telemetry.tables import spans
from swarmcommon import keyset
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.pagination import Page

S = spans
INSERT_CHUNK = 500
# Deeper trees than this are not real traces.
MAX_HAND_DOWN_DEPTH = 64


def _to_row(span: Span, received_at: datetime) -> dict[str, Any]:
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": span.kind,
        "status": span.status,
        "status_message": span.status_message,
        "start_ns": span.start_ns,
        "end_ns": span.end_ns,
        "attributes": span.attributes_json,
        "events": span.events_json,
        "service_name": span.service_name,
        "tenant_id": span.tenant_id,
        "ticket_id": span.ticket_id,
        "agent_id": span.agent_id,
        "received_at": received_at,
    }


def _from_row(r: Any) -> Span:
    m = r._mapping
    return Span(
        trace_id=m["trace_id"],
        span_id=m["span_id"],
        parent_span_id=m["parent_span_id"],
        name=m["name"],
        kind=SpanKind(m["kind"]) if m["kind"] else None,
        status=SpanStatus(m["status"]) if m["status"] else None,
        status_message=m["status_message"],
        start_ns=m["start_ns"],
        end_ns=m["end_ns"],
        attributes=json.loads(m["attributes"]),
        events=[SpanEvent(e["name"], int(e["time_ns"]), e["attributes"]) for e in json.loads(m["events"])],
        service_name=m["service_name"],
        tenant_id=m["tenant_id"],
        ticket_id=m["ticket_id"],
        agent_id=m["agent_id"],
    )


_COLUMNS = tuple(c.name for c in S.c if c.name != "seq")
_COLUMN_LIST = ", ".join(_COLUMNS)
# A per-session staging table; emptied at each commit.
_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS span_intake "
    "(LIKE spans INCLUDING DEFAULTS EXCLUDING CONSTRAINTS EXCLUDING IDENTITY) ON COMMIT DELETE ROWS"
)
_FROM_STAGE = sa.text(
    f"INSERT INTO spans ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM span_intake "
    "ON CONFLICT (trace_id, span_id) DO NOTHING RETURNING span_id"
)


def _copy_in(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """PostgreSQL: COPY the export into the session's staging table, then
    one INSERT … SELECT that skips spans already stored. COPY takes the rows
    as data, with no SQL text to build or parse per export (the multi-row
    INSERT spent half its time there)."""
    conn.exec_driver_sql(_STAGE)
    dbapi = conn.connection.driver_connection
    assert dbapi is not None
    with dbapi.cursor() as cur, cur.copy(f"COPY span_intake ({_COLUMN_LIST}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] for c in _COLUMNS])
    return len(conn.execute(_FROM_STAGE).all())


class SpanStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        insert = postgresql.insert if db.is_postgres else sqlite.insert
        self._store = (
            insert(S)
            .on_conflict_do_nothing(index_elements=["trace_id", "span_id"])
            .returning(S.c.span_id)
            .execution_options(insertmanyvalues_page_size=INSERT_CHUNK)
        )

    def ingest(self, checked: Sequence[Span]) -> int:
        """Store spans that passed `domain.check_span`; one already stored (a
        re-sent export) is skipped. Returns how many were new.

        Only some spans say whose they are (`swarm.*` attributes, usually on
        the agent's `agent.work`); their descendants inherit tenant, ticket
        and agent, whichever arrives first: exporters send children before
        their parents."""
        if not checked:
            return 0
        now = self.clock.now()
        batch = {(s.trace_id, s.span_id): _to_row(s, now) for s in checked}

        def tx(conn: Connection) -> int:
            _inherit_from_parents(conn, batch)
            values = list(batch.values())
            if self.db.is_postgres:
                stored = _copy_in(conn, values)
            else:
                # One cached statement, many rows: multi-row INSERTs of up to
                # INSERT_CHUNK ("insertmanyvalues"), not a statement compiled
                # per export; RETURNING names the rows that were new.
                stored = len(conn.execute(self._store, values).all())
            _hand_down(conn, [r for r in values if r["ticket_id"]])
            return stored

        return int(self.db.transaction(tx))

    def traces_of_ticket(self, tenant_id: str, ticket_id: str) -> list[Span]:
        """Every span of the traces the ticket's spans are in, by start time:
        the tenant's and those no tenant owns (a service's), never another
        tenant's (an agent exporting into a trace id it learnt)."""
        trace_ids = sa.select(S.c.trace_id).where(S.c.tenant_id == tenant_id, S.c.ticket_id == ticket_id)
        query = (
            sa.select(S)
            .where(S.c.trace_id.in_(trace_ids.distinct()), S.c.tenant_id.in_([tenant_id, ""]))
            .order_by(S.c.start_ns)
        )
        rows = self.db.transaction(lambda conn: conn.execute(query).all(), write=False)
        return [_from_row(r) for r in rows]

    def list_spans(self, q: SpanQuery) -> Page[Span]:
        """Newest first, keyset-paged on (start, seq)."""
        filters = [
            "spans",
            q.tenant_id,
            q.trace_id,
            q.ticket_id,
            q.agent_id,
            q.name,
            q.status,
            q.min_duration_ns,
            q.start_ns,
            q.end_ns,
        ]
        query = sa.select(S).where(S.c.tenant_id == q.tenant_id)
        for column, wanted in (
            (S.c.trace_id, q.trace_id),
            (S.c.ticket_id, q.ticket_id),
            (S.c.agent_id, q.agent_id),
            (S.c.name, q.name),
            (S.c.status, q.status),
        ):
            if wanted is not None:
                query = query.where(column == wanted)
        if q.min_duration_ns is not None:
            query = query.where(S.c.end_ns - S.c.start_ns >= q.min_duration_ns)
        if q.start_ns is not None:
            query = query.where(S.c.start_ns >= q.start_ns)
        if q.end_ns is not None:
            query = query.where(S.c.start_ns < q.end_ns)
        order = [S.c.start_ns, S.c.seq]
        return keyset.listing(
            self.db, query, order, filters, q.page_size, q.page_token, _from_row, descending=True
        )

    def purge(self, older_than: timedelta, limit: int | None = None) -> int:
        """Delete spans received more than `older_than` ago, at most `limit`
        of them (oldest first) so one pass never holds a long lock."""
        cutoff: datetime = self.clock.now() - older_than
        where = S.c.received_at < cutoff
        if limit is not None:
            oldest = sa.select(S.c.seq).where(where).order_by(S.c.seq).limit(limit)
            where = S.c.seq.in_(oldest.scalar_subquery())
        return int(self.db.transaction(lambda conn: conn.execute(sa.delete(S).where(where)).rowcount))


def _inherit_from_parents(conn: Connection, batch: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Give spans that name no ticket their parent's, from the batch or the table."""
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


def _hand_down(conn: Connection, owned: list[dict[str, Any]]) -> None:
    """Give owned spans' stored descendants (children that came first) their ticket."""
    owners = {(r["trace_id"], r["span_id"]): (r["tenant_id"], r["ticket_id"], r["agent_id"]) for r in owned}
    for _ in range(MAX_HAND_DOWN_DEPTH):
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
