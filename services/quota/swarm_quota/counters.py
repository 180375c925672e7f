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
one everlasting row that Release decrements.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from swarm_quota import idempotency
from swarm_quota.domain import (
    GAUGES,
    WINDOWED,
    Reservation,
    Resource,
    Tenant,
    Usage,
    check_amount,
    refusal,
    window,
)
from swarm_quota.store import load_tenant
from swarm_quota.tables import counters, reservations
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import InvalidArgument, NotFound, QuotaExceeded
from swarmcommon.pagination import Page, PageToken

C = counters
R = reservations


def _to_reservation(row: Any) -> Reservation:
    m = row._mapping
    return Reservation(
        id=m["id"],
        tenant_id=m["tenant_id"],
        resource=Resource(m["resource"]),
        amount=m["amount"],
        owner=m["owner"],
        created_at=m["created_at"],
        released_at=m["released_at"],
    )


class Counters:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._insert = postgresql.insert if db.is_postgres else sqlite.insert

    # -- the atomic step ------------------------------------------------------------

    def _charge(
        self, conn: Connection, tenant: Tenant, resource: Resource, amount: int, now: datetime, overage: bool
    ) -> Usage:
        start, end = window(resource, now)
        limit = None if overage else tenant.limit(resource)
        if limit is not None and amount > limit:
            raise refusal(resource, self._used(conn, tenant.id, resource, start), limit, end, now)
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
            raise refusal(resource, self._used(conn, tenant.id, resource, start), limit or 0, end, now)
        return Usage(resource, row.used, tenant.limit(resource), start if end else None, end)

    @staticmethod
    def _used(conn: Connection, tenant_id: str, resource: Resource, start: datetime) -> int:
        used = conn.execute(
            sa.select(C.c.used).where(
                C.c.tenant_id == tenant_id, C.c.resource == resource.value, C.c.window_start == start
            )
        ).scalar()
        return int(used or 0)

    # -- windowed resources -------------------------------------------------------------

    def consume(
        self, tenant_id: str, resource: Resource, amount: int, request_id: str | None, allow_overage: bool
    ) -> Usage:
        if resource not in WINDOWED:
            raise InvalidArgument("resource", f"{resource} is held, not consumed: use Reserve and Release")
        check_amount(amount)

        def tx(conn: Connection) -> Usage | QuotaExceeded:
            tenant = load_tenant(conn, tenant_id)
            now = self.clock.now()
            prior = idempotency.prior(conn, tenant_id, "consume", request_id)
            if prior is not None:
                return self._replay_consume(tenant, resource, prior, now)
            idempotency.claim(conn, tenant_id, "consume", request_id, now)
            try:
                usage = self._charge(conn, tenant, resource, amount, now, allow_overage)
            except QuotaExceeded as refused:
                if not request_id:
                    raise
                # The proto: a retry gets the first answer, including a
                # rejection. Commit the record; raise after the commit.
                idempotency.record(
                    conn,
                    tenant_id,
                    "consume",
                    request_id,
                    {
                        "resource": resource.value,
                        "refused": {
                            "current": refused.current,
                            "limit": refused.limit,
                            "resets_at": refused.resets_at.isoformat() if refused.resets_at else None,
                        },
                    },
                )
                return refused
            window_start = usage.window_start or now
            idempotency.record(
                conn,
                tenant_id,
                "consume",
                request_id,
                {"resource": resource.value, "used": usage.used, "window_start": window_start.isoformat()},
            )
            return usage

        result = idempotency.once(self.db, request_id, tx)
        if isinstance(result, QuotaExceeded):
            raise result
        return result

    @staticmethod
    def _replay_consume(
        tenant: Tenant, resource: Resource, prior: dict[str, Any], now: datetime
    ) -> Usage | QuotaExceeded:
        resource = Resource(prior.get("resource", resource.value))
        refused = prior.get("refused")
        if refused is not None:
            resets_at = datetime.fromisoformat(refused["resets_at"]) if refused["resets_at"] else None
            return refusal(resource, refused["current"], refused["limit"], resets_at, now)
        start, end = window(resource, datetime.fromisoformat(prior["window_start"]))
        return Usage(resource, prior["used"], tenant.limit(resource), start, end)

    # -- gauges ---------------------------------------------------------------------------

    def reserve(
        self, tenant_id: str, resource: Resource, amount: int, owner: str, request_id: str | None
    ) -> tuple[Reservation, Usage]:
        if resource not in GAUGES:
            raise InvalidArgument("resource", f"{resource} is consumed, not held: use Consume")
        check_amount(amount)

        def tx(conn: Connection) -> tuple[Reservation, Usage]:
            tenant = load_tenant(conn, tenant_id)
            now = self.clock.now()
            prior = idempotency.prior(conn, tenant_id, "reserve", request_id)
            if prior is not None:
                row = conn.execute(sa.select(R).where(R.c.id == prior["reservation_id"])).one()
                reservation = _to_reservation(row)
                return reservation, self._usage(conn, tenant, reservation.resource)
            # Unlike Consume, a refused Reserve is not recorded (the proto
            # promises the same reservation, not the same refusal): it rolls
            # back, request id included, so the holder may retry once VMs end.
            idempotency.claim(conn, tenant_id, "reserve", request_id, now)
            usage = self._charge(conn, tenant, resource, amount, now, overage=False)
            reservation_id = str(uuid.uuid4())
            conn.execute(
                sa.insert(R).values(
                    id=reservation_id,
                    tenant_id=tenant_id,
                    resource=resource.value,
                    amount=amount,
                    owner=owner,
                    created_at=now,
                )
            )
            idempotency.record(conn, tenant_id, "reserve", request_id, {"reservation_id": reservation_id})
            return _to_reservation(conn.execute(sa.select(R).where(R.c.id == reservation_id)).one()), usage

        return idempotency.once(self.db, request_id, tx)

    def release(self, tenant_id: str, reservation_id: str) -> tuple[Reservation, bool, Usage]:
        """Give a reservation back; releasing twice changes nothing."""

        def tx(conn: Connection) -> tuple[Reservation, bool, Usage]:
            tenant = load_tenant(conn, tenant_id)
            now = self.clock.now()
            freed = conn.execute(
                sa.update(R)
                .where(R.c.id == reservation_id, R.c.tenant_id == tenant_id, R.c.released_at.is_(None))
                .values(released_at=now)
                .returning(R.c.resource, R.c.amount)
            ).first()
            if freed is not None:
                conn.execute(
                    sa.update(C)
                    .where(
                        C.c.tenant_id == tenant_id,
                        C.c.resource == freed.resource,
                        C.c.window_start == window(Resource(freed.resource), now)[0],
                    )
                    .values(used=C.c.used - freed.amount)
                )
            row = conn.execute(
                sa.select(R).where(R.c.id == reservation_id, R.c.tenant_id == tenant_id)
            ).first()
            if row is None:
                raise NotFound(
                    f"reservation {reservation_id} not found",
                    resource_type="reservation",
                    resource_name=reservation_id,
                )
            reservation = _to_reservation(row)
            return reservation, freed is not None, self._usage(conn, tenant, reservation.resource)

        result: tuple[Reservation, bool, Usage] = self.db.transaction(tx)
        return result

    def list_reservations(
        self, tenant_id: str, resource: Resource | None, owner: str | None, page_size: int, page_token: str
    ) -> Page[Reservation]:
        token = PageToken(["reservations", tenant_id, resource, owner])
        key = token.decode(page_token, (datetime, str))
        query = sa.select(R).where(R.c.tenant_id == tenant_id, R.c.released_at.is_(None))
        if resource is not None:
            query = query.where(R.c.resource == resource.value)
        if owner:
            query = query.where(R.c.owner == owner)
        if key is not None:
            after = sa.tuple_(sa.literal(key[0]), sa.literal(key[1]))
            query = query.where(sa.tuple_(R.c.created_at, R.c.id) > after)
        query = query.order_by(R.c.created_at, R.c.id).limit(page_size + 1)

        def read(conn: Connection) -> list[Any]:
            load_tenant(conn, tenant_id)
            return list(conn.execute(query).all())

        rows = self.db.transaction(read, write=False)
        items = [_to_reservation(r) for r in rows[:page_size]]
        nxt = token.encode([items[-1].created_at.isoformat(), items[-1].id]) if len(rows) > page_size else ""
        return Page(items, nxt)

    # -- usage ----------------------------------------------------------------------------

    def _usage(self, conn: Connection, tenant: Tenant, resource: Resource) -> Usage:
        start, end = window(resource, self.clock.now())
        used = self._used(conn, tenant.id, resource, start)
        return Usage(resource, used, tenant.limit(resource), start if end else None, end)

    def usage(self, tenant_id: str) -> tuple[Tenant, list[Usage]]:
        def read(conn: Connection) -> tuple[Tenant, list[Usage]]:
            tenant = load_tenant(conn, tenant_id)
            return tenant, [self._usage(conn, tenant, r) for r in Resource]

        result: tuple[Tenant, list[Usage]] = self.db.transaction(read, write=False)
        return result
