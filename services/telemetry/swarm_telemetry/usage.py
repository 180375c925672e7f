"""The LLM cost ledger: idempotent records priced from the versioned table,
summaries by one dimension, and budgets (the tenant's COST_USD_MONTH quota).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_telemetry.prices import PRICE_VERSION, cost_usd_micros, price_of
from swarm_telemetry.tables import usage_records
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import PageToken

U = usage_records
GROUPS = ("project", "ticket", "agent_type", "model", "day", "month")
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


class Budgets(Protocol):
    def charge(self, tenant_id: str, cost_usd_micros: int, request_id: str) -> None:
        """Add spend that already happened to the tenant's monthly counter."""

    def limit(self, tenant_id: str) -> int | None:
        """The tenant's monthly budget in micro-dollars; None when unlimited."""


@dataclass(frozen=True)
class UsageInput:
    request_id: str
    tenant_id: str
    project_id: str
    ticket_id: str
    agent_id: str
    request_type: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    usage_at: datetime | None


@dataclass(frozen=True)
class Totals:
    request_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd_micros: int = 0
    unknown_model_count: int = 0


@dataclass(frozen=True)
class SummaryRow:
    key: str
    totals: Totals
    share_of_cost: float


@dataclass(frozen=True)
class Budget:
    allowed: bool
    spent: int
    limit: int | None
    reset_at: datetime


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(now: datetime) -> datetime:
    start = month_start(now)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


class UsageLedger:
    def __init__(self, db: Database, clock: Clock, budgets: Budgets | None) -> None:
        self.db = db
        self.clock = clock
        self.budgets = budgets

    def _existing(self, tenant_id: str, request_id: str) -> Any:
        return self.db.transaction(
            lambda conn: conn.execute(
                sa.select(U).where(U.c.tenant_id == tenant_id, U.c.request_id == request_id)
            ).first(),
            write=False,
        )

    def record(self, u: UsageInput) -> Any:
        """Price and store one call; a replayed request_id returns the first
        record and charges nothing again (quota dedupes on the same key)."""
        existing = self._existing(u.tenant_id, u.request_id)
        if existing is not None:
            return existing
        price = price_of(u.provider, u.model)
        cost = (
            cost_usd_micros(
                price,
                u.input_tokens,
                u.output_tokens,
                u.cache_creation_input_tokens,
                u.cache_read_input_tokens,
            )
            if price
            else 0
        )
        if self.budgets is not None and cost > 0:
            # Before the row: if quota cannot be reached the caller retries
            # with the same request_id, and quota counts it once.
            self.budgets.charge(u.tenant_id, cost, f"usage:{u.request_id}")
        now = self.clock.now()
        row = {
            "id": str(uuid.uuid4()),
            "request_id": u.request_id,
            "tenant_id": u.tenant_id,
            "project_id": u.project_id,
            "ticket_id": u.ticket_id,
            "agent_id": u.agent_id,
            "request_type": u.request_type,
            "provider": u.provider,
            "model": u.model,
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_creation_input_tokens": u.cache_creation_input_tokens,
            "cache_read_input_tokens": u.cache_read_input_tokens,
            "cost_usd_micros": cost,
            "price_version": PRICE_VERSION,
            "unknown_model": price is None,
            "usage_at": u.usage_at or now,
            "created_at": now,
        }
        try:
            self.db.transaction(lambda conn: conn.execute(sa.insert(U).values(**row)))
        except IntegrityError:
            pass  # a concurrent replay stored it first
        return self._existing(u.tenant_id, u.request_id)

    # -- summaries --------------------------------------------------------------------------

    def _key(self, group: str) -> sa.ColumnElement[Any]:
        if group in ("day", "month"):
            fmt = "%Y-%m-%d" if group == "day" else "%Y-%m"
            if self.db.is_postgres:
                pg = "YYYY-MM-DD" if group == "day" else "YYYY-MM"
                return sa.func.to_char(sa.func.timezone("UTC", U.c.usage_at), pg)
            return sa.func.strftime(fmt, U.c.usage_at)
        return {
            "project": U.c.project_id,
            "ticket": U.c.ticket_id,
            "agent_type": U.c.request_type,
            "model": U.c.model,
        }[group]

    @staticmethod
    def _sums() -> list[sa.ColumnElement[Any]]:
        return [
            sa.func.count().label("request_count"),
            *(sa.func.coalesce(sa.func.sum(getattr(U.c, c)), 0).label(c) for c in TOKEN_COLUMNS),
            sa.func.coalesce(sa.func.sum(U.c.cost_usd_micros), 0).label("cost_usd_micros"),
            sa.func.coalesce(sa.func.sum(sa.case((U.c.unknown_model, 1), else_=0)), 0).label(
                "unknown_model_count"
            ),
        ]

    @staticmethod
    def _totals(r: Any) -> Totals:
        return Totals(*(int(v) for v in r[-7:]))

    def summary(
        self,
        tenant_id: str,
        group: str,
        start: datetime | None,
        end: datetime | None,
        project_id: str | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[SummaryRow], Totals, str]:
        if group not in GROUPS:
            raise InvalidArgument("group_by", f"must be one of {', '.join(GROUPS)}")
        token = PageToken(["usage", tenant_id, group, start, end, project_id])
        key = token.decode(page_token, (int, datetime, datetime))
        if key is not None:  # later pages keep the first page's resolved range
            offset, start, end = key
        else:
            now = self.clock.now()
            offset, start, end = 0, start or month_start(now), end or now
        if end <= start:
            raise InvalidArgument("end_time", "must be after start_time")
        where = [U.c.tenant_id == tenant_id, U.c.usage_at >= start, U.c.usage_at < end]
        if project_id:
            where.append(U.c.project_id == project_id)
        group_key = self._key(group).label("key")
        cost = sa.func.coalesce(sa.func.sum(U.c.cost_usd_micros), 0)
        order: list[Any] = [group_key] if group in ("day", "month") else [cost.desc(), group_key]
        query = (
            sa.select(group_key, *self._sums())
            .where(*where)
            .group_by(group_key)
            .order_by(*order)
            .offset(offset)
            .limit(page_size + 1)
        )
        total_query = sa.select(*self._sums()).where(*where)

        def read(conn: Connection) -> tuple[list[Any], Any]:
            return list(conn.execute(query).all()), conn.execute(total_query).one()

        rows, total_row = self.db.transaction(read, write=False)
        total = self._totals(total_row)
        out = [
            SummaryRow(
                str(r.key or ""),
                t := self._totals(r),
                t.cost_usd_micros / total.cost_usd_micros if total.cost_usd_micros else 0.0,
            )
            for r in rows[:page_size]
        ]
        nxt = (
            token.encode([offset + page_size, start.isoformat(), end.isoformat()])
            if len(rows) > page_size
            else ""
        )
        return out, total, nxt

    # -- budgets ------------------------------------------------------------------------------

    def month_spend(self, tenant_id: str, now: datetime) -> int:
        q = sa.select(sa.func.coalesce(sa.func.sum(U.c.cost_usd_micros), 0)).where(
            U.c.tenant_id == tenant_id, U.c.usage_at >= month_start(now), U.c.usage_at < next_month(now)
        )
        return int(self.db.transaction(lambda conn: conn.execute(q).scalar_one(), write=False))

    def check_budget(self, tenant_id: str, estimated: int) -> Budget:
        now = self.clock.now()
        spent = self.month_spend(tenant_id, now)
        limit = self.budgets.limit(tenant_id) if self.budgets is not None else None
        if limit is None:
            allowed = True
        elif estimated > 0:  # the call must still fit
            allowed = spent + estimated <= limit
        else:  # some budget must be left
            allowed = spent < limit
        return Budget(allowed, spent, limit, next_month(now))
