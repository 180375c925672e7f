"""Quota counting: the admission check and the update of `used` are ONE
statement, so concurrent callers can never over-admit.

    INSERT INTO counters (tenant_id, resource, window_start, used) VALUES (…, :amount)
    ON CONFLICT (tenant_id, resource, window_start)
    DO UPDATE SET used = counters.used + excluded.used
              WHERE counters.used + excluded.used <= :limit
    RETURNING used

No row back means the charge did not fit and nothing changed. PostgreSQL
serializes conflicting upserts on the row; SQLite has one writer. Windowed
resources get a row per aligned window (UTC hour, day, month); gauges (VMs)
one everlasting row that Release decrements (see `reservations.py`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from swarm_quota.domain import (
    COUNTED,
    WINDOWED,
    Resource,
    Tenant,
    Usage,
    check_amount,
    check_counted,
    refusal,
    window,
)
from swarm_quota.stores.requests import REQUEST_LOG
from swarm_quota.stores.tenants import load_tenant
from swarm_quota.tables import counters
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import InvalidArgument, QuotaExceeded
from swarmcommon.idempotency import RequestKey

C = counters


def used(conn: Connection, tenant_id: str, resource: Resource, start: datetime) -> int:
    value = conn.execute(
        sa.select(C.c.used).where(
            C.c.tenant_id == tenant_id, C.c.resource == resource.value, C.c.window_start == start
        )
    ).scalar()
    return int(value or 0)


class Counters:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._insert = postgresql.insert if db.is_postgres else sqlite.insert

    # -- the atomic step ------------------------------------------------------------

    def charge(
        self, conn: Connection, tenant: Tenant, resource: Resource, amount: int, now: datetime, overage: bool
    ) -> Usage:
        """Admit `amount` in the current window, or raise QuotaExceeded and change nothing."""
        start, end = window(resource, now)
        limit = None if overage else tenant.limit(resource)
        if limit is not None and amount > limit:
            raise refusal(resource, used(conn, tenant.id, resource, start), limit, end, now)
        ins = self._insert(C).values(
            tenant_id=tenant.id, resource=resource.value, window_start=start, used=amount
        )
        stmt = ins.on_conflict_do_update(
            index_elements=[C.c.tenant_id, C.c.resource, C.c.window_start],
            set_={"used": C.c.used + ins.excluded.used},
            where=(C.c.used + ins.excluded.used <= limit) if limit is not None else None,
        ).returning(C.c.used)
        row = conn.execute(stmt).first()
        if row is None:
            raise refusal(resource, used(conn, tenant.id, resource, start), limit or 0, end, now)
        return Usage(resource, row.used, tenant.limit(resource), start if end else None, end)

    def give_back(
        self, conn: Connection, tenant_id: str, resource: Resource, amount: int, reserved_at: datetime
    ) -> None:
        """Return a released reservation's `amount` to the window it was taken from."""
        conn.execute(
            sa.update(C)
            .where(
                C.c.tenant_id == tenant_id,
                C.c.resource == resource.value,
                C.c.window_start == window(resource, reserved_at)[0],
            )
            .values(used=C.c.used - amount)
        )

    # -- windowed resources -------------------------------------------------------------

    def consume(
        self, tenant_id: str, resource: Resource, amount: int, allow_overage: bool, key: RequestKey | None
    ) -> Usage:
        if check_counted(resource) not in WINDOWED:
            raise InvalidArgument("resource", f"{resource} is held, not consumed: use Reserve and Release")
        check_amount(amount)

        def tx(conn: Connection) -> Usage | QuotaExceeded:
            tenant = load_tenant(conn, tenant_id)
            now = self.clock.now()
            prior = REQUEST_LOG.lookup(conn, key)
            if prior is not None:
                return self._replay(tenant, resource, prior, now)
            REQUEST_LOG.claim(conn, key, now)
            try:
                usage = self.charge(conn, tenant, resource, amount, now, allow_overage)
            except QuotaExceeded as refused:
                if key is None:
                    raise
                # The proto: a retry gets the first answer, including a
                # rejection. Commit the record; raise after the commit.
                REQUEST_LOG.record(conn, key, {"resource": resource.value, "refused": _refused(refused)})
                return refused
            window_start = (usage.window_start or now).isoformat()
            REQUEST_LOG.record(
                conn, key, {"resource": resource.value, "used": usage.used, "window_start": window_start}
            )
            return usage

        result = REQUEST_LOG.once(self.db, key, tx)
        if isinstance(result, QuotaExceeded):
            raise result
        return result

    @staticmethod
    def _replay(
        tenant: Tenant, resource: Resource, prior: dict[str, Any], now: datetime
    ) -> Usage | QuotaExceeded:
        resource = Resource(prior.get("resource", resource.value))
        refused = prior.get("refused")
        if refused is not None:
            resets_at = datetime.fromisoformat(refused["resets_at"]) if refused["resets_at"] else None
            return refusal(resource, refused["current"], refused["limit"], resets_at, now)
        start, end = window(resource, datetime.fromisoformat(prior["window_start"]))
        return Usage(resource, prior["used"], tenant.limit(resource), start, end)

    # -- usage ----------------------------------------------------------------------------

    def current(self, conn: Connection, tenant: Tenant, resource: Resource) -> Usage:
        start, end = window(resource, self.clock.now())
        return Usage(
            resource,
            used(conn, tenant.id, resource, start),
            tenant.limit(resource),
            start if end else None,
            end,
        )

    def usage(self, tenant_id: str) -> tuple[Tenant, list[Usage]]:
        def read(conn: Connection) -> tuple[Tenant, list[Usage]]:
            tenant = load_tenant(conn, tenant_id)
            return tenant, [self.current(conn, tenant, r) for r in COUNTED]

        result: tuple[Tenant, list[Usage]] = self.db.transaction(read, write=False)
        return result


def _refused(refused: QuotaExceeded) -> dict[str, Any]:
    return {
        "current": refused.current,
        "limit": refused.limit,
        "resets_at": refused.resets_at.isoformat() if refused.resets_at else None,
    }
