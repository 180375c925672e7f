"""The cost ledger's rows: one per recorded LLM call (unique per tenant and
request_id), sums by one dimension, and a month's spend."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_telemetry.domain import (
    RequestType,
    SummaryQuery,
    Tokens,
    Totals,
    UsageGroup,
    UsageRecord,
    UsageSummary,
    month_start,
    next_month,
    summary_rows,
)
from swarm_telemetry.tables import usage_records
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import PageToken

U = usage_records
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
# Time groups as text: SQLite strftime / PostgreSQL to_char formats.
_TIME_FORMATS = {UsageGroup.DAY: ("%Y-%m-%d", "YYYY-MM-DD"), UsageGroup.MONTH: ("%Y-%m", "YYYY-MM")}
_GROUP_COLUMNS = {
    UsageGroup.PROJECT: U.c.project_id,
    UsageGroup.TICKET: U.c.ticket_id,
    UsageGroup.AGENT_TYPE: U.c.request_type,
    UsageGroup.MODEL: U.c.model,
}


def _to_row(r: UsageRecord, created_at: datetime) -> dict[str, Any]:
    return {
        "id": r.id,
        "request_id": r.request_id,
        "tenant_id": r.tenant_id,
        "project_id": r.project_id,
        "ticket_id": r.ticket_id,
        "agent_id": r.agent_id,
        "request_type": r.request_type,
        "provider": r.provider,
        "model": r.model,
        **{c: getattr(r.tokens, c) for c in TOKEN_COLUMNS},
        "cost_usd_micros": r.cost_usd_micros,
        "price_version": r.price_version,
        "unknown_model": r.unknown_model,
        "usage_at": r.usage_at,
        "created_at": created_at,
    }


def _from_row(row: Any) -> UsageRecord:
    m = row._mapping
    return UsageRecord(
        id=m["id"],
        request_id=m["request_id"],
        tenant_id=m["tenant_id"],
        project_id=m["project_id"],
        ticket_id=m["ticket_id"],
        agent_id=m["agent_id"],
        request_type=RequestType(m["request_type"]),
        provider=m["provider"],
        model=m["model"],
        tokens=Tokens(*(int(m[c]) for c in TOKEN_COLUMNS)),
        cost_usd_micros=int(m["cost_usd_micros"]),
        price_version=m["price_version"],
        unknown_model=bool(m["unknown_model"]),
        usage_at=m["usage_at"],
    )


def _sums() -> list[sa.ColumnElement[Any]]:
    return [
        sa.func.count().label("request_count"),
        *(sa.func.coalesce(sa.func.sum(getattr(U.c, c)), 0).label(c) for c in TOKEN_COLUMNS),
        sa.func.coalesce(sa.func.sum(U.c.cost_usd_micros), 0).label("cost_usd_micros"),
        sa.func.coalesce(sa.func.sum(sa.case((U.c.unknown_model, 1), else_=0)), 0).label(
            "unknown_model_count"
        ),
    ]


def _totals(r: Any) -> Totals:
    return Totals(*(int(v) for v in r[-7:]))


class UsageStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def find(self, tenant_id: str, request_id: str) -> UsageRecord | None:
        row = self.db.transaction(
            lambda conn: conn.execute(
                sa.select(U).where(U.c.tenant_id == tenant_id, U.c.request_id == request_id)
            ).first(),
            write=False,
        )
        return None if row is None else _from_row(row)

    def insert(self, record: UsageRecord) -> bool:
        """Store a record; False when its request_id was stored first by a
        concurrent call (the caller then answers with that one)."""
        row = _to_row(record, self.clock.now())
        try:
            self.db.transaction(lambda conn: conn.execute(sa.insert(U).values(**row)))
        except IntegrityError:
            return False
        return True

    def _group_key(self, group: UsageGroup) -> sa.ColumnElement[Any]:
        if group in _TIME_FORMATS:
            sqlite_format, postgres_format = _TIME_FORMATS[group]
            if self.db.is_postgres:
                return sa.func.to_char(sa.func.timezone("UTC", U.c.usage_at), postgres_format)
            return sa.func.strftime(sqlite_format, U.c.usage_at)
        return _GROUP_COLUMNS[group]

    def summary(self, q: SummaryQuery) -> UsageSummary:
        """Sums per group over [start, end), a page of groups at a time; the
        range is resolved on the first page and carried in the token."""
        token = PageToken(["usage", q.tenant_id, q.group, q.start, q.end, q.project_id])
        key = token.decode(q.page_token, (int, datetime, datetime))
        if key is not None:
            offset, start, end = key
        else:
            now = self.clock.now()
            offset, start, end = 0, q.start or month_start(now), q.end or now
        if end <= start:
            raise InvalidArgument("end_time", "must be after start_time")
        where = [U.c.tenant_id == q.tenant_id, U.c.usage_at >= start, U.c.usage_at < end]
        if q.project_id:
            where.append(U.c.project_id == q.project_id)
        group_key = self._group_key(q.group).label("key")
        cost = sa.func.coalesce(sa.func.sum(U.c.cost_usd_micros), 0)
        order: list[Any] = [group_key] if q.group.is_time else [cost.desc(), group_key]
        query = (
            sa.select(group_key, *_sums())
            .where(*where)
            .group_by(group_key)
            .order_by(*order)
            .offset(offset)
            .limit(q.page_size + 1)
        )
        total_query = sa.select(*_sums()).where(*where)

        def read(conn: Connection) -> tuple[list[Any], Any]:
            return list(conn.execute(query).all()), conn.execute(total_query).one()

        rows, total_row = self.db.transaction(read, write=False)
        total = _totals(total_row)
        groups = [(str(r.key or ""), _totals(r)) for r in rows[: q.page_size]]
        more = len(rows) > q.page_size
        nxt = token.encode([offset + q.page_size, start.isoformat(), end.isoformat()]) if more else ""
        return UsageSummary(summary_rows(groups, total), total, nxt)

    def month_spend(self, tenant_id: str, now: datetime) -> int:
        """The tenant's cost in the UTC calendar month of `now`."""
        q = sa.select(sa.func.coalesce(sa.func.sum(U.c.cost_usd_micros), 0)).where(
            U.c.tenant_id == tenant_id, U.c.usage_at >= month_start(now), U.c.usage_at < next_month(now)
        )
        return int(self.db.transaction(lambda conn: conn.execute(q).scalar_one(), write=False))

    def ticket_totals(self, tenant_id: str, ticket_id: str) -> Totals:
        """Everything the ticket's LLM calls used and cost, over all time (ix_usage_ticket)."""
        q = sa.select(*_sums()).where(U.c.tenant_id == tenant_id, U.c.ticket_id == ticket_id)
        return _totals(self.db.transaction(lambda conn: conn.execute(q).one(), write=False))
