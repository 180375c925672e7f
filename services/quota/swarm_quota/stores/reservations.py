"""Reservations of gauges (VMs): held with Reserve while the thing exists,
given back with Release. The charge itself is `counters.Counters.charge`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_quota.domain import GAUGES, Reservation, Resource, Usage, check_amount
from swarm_quota.stores.counters import Counters
from swarm_quota.stores.requests import REQUEST_LOG
from swarm_quota.stores.tenants import load_tenant
from swarm_quota.tables import reservations
from swarmcommon import keyset
from swarmcommon.db import Database
from swarmcommon.errors import InvalidArgument, NotFound
from swarmcommon.idempotency import RequestKey
from swarmcommon.pagination import Page

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


def _load(conn: Connection, tenant_id: str, reservation_id: str) -> Reservation:
    row = conn.execute(sa.select(R).where(R.c.id == reservation_id, R.c.tenant_id == tenant_id)).first()
    if row is None:
        raise NotFound(
            f"reservation {reservation_id} not found",
            resource_type="reservation",
            resource_name=reservation_id,
        )
    return _to_reservation(row)


class Reservations:
    def __init__(self, db: Database, counters: Counters) -> None:
        self.db = db
        self.counters = counters
        self.clock = counters.clock

    def reserve(
        self, tenant_id: str, resource: Resource, amount: int, owner: str, key: RequestKey | None
    ) -> tuple[Reservation, Usage]:
        if resource not in GAUGES:
            raise InvalidArgument("resource", f"{resource} is consumed, not held: use Consume")
        check_amount(amount)

        def tx(conn: Connection) -> tuple[Reservation, Usage]:
            tenant = load_tenant(conn, tenant_id)
            now = self.clock.now()
            prior = REQUEST_LOG.lookup(conn, key)
            if prior is not None:
                reservation = _load(conn, tenant_id, prior["reservation_id"])
                return reservation, self.counters.current(conn, tenant, reservation.resource)
            # Unlike Consume, a refused Reserve is not recorded (the proto
            # promises the same reservation, not the same refusal): it rolls
            # back, request id included, so the holder may retry once VMs end.
            REQUEST_LOG.claim(conn, key, now)
            usage = self.counters.charge(conn, tenant, resource, amount, now, overage=False)
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
            REQUEST_LOG.record(conn, key, {"reservation_id": reservation_id})
            return _load(conn, tenant_id, reservation_id), usage

        return REQUEST_LOG.once(self.db, key, tx)

    def release(
        self, tenant_id: str, reservation_id: str, key: RequestKey | None
    ) -> tuple[Reservation, bool, Usage]:
        """Give a reservation back; releasing twice changes nothing. A retry
        with the first call's request_id answers `released` as it did."""

        def tx(conn: Connection) -> tuple[Reservation, bool, Usage]:
            tenant = load_tenant(conn, tenant_id)
            now = self.clock.now()
            prior = REQUEST_LOG.lookup(conn, key)
            released = (
                bool(prior["released"])
                if prior is not None
                else self._free(conn, tenant_id, reservation_id, now, key)
            )
            reservation = _load(conn, tenant_id, reservation_id)
            return reservation, released, self.counters.current(conn, tenant, reservation.resource)

        return REQUEST_LOG.once(self.db, key, tx)

    def _free(
        self, conn: Connection, tenant_id: str, reservation_id: str, now: datetime, key: RequestKey | None
    ) -> bool:
        _load(conn, tenant_id, reservation_id)  # NOT_FOUND before the request id is taken
        REQUEST_LOG.claim(conn, key, now)
        freed = conn.execute(
            sa.update(R)
            .where(R.c.id == reservation_id, R.c.tenant_id == tenant_id, R.c.released_at.is_(None))
            .values(released_at=now)
            .returning(R.c.resource, R.c.amount)
        ).first()
        if freed is not None:
            self.counters.give_back(conn, tenant_id, Resource(freed.resource), freed.amount, now)
        REQUEST_LOG.record(conn, key, {"released": freed is not None})
        return freed is not None

    def page(
        self, tenant_id: str, resource: Resource | None, owner: str | None, page_size: int, page_token: str
    ) -> Page[Reservation]:
        query = sa.select(R).where(R.c.tenant_id == tenant_id, R.c.released_at.is_(None))
        if resource is not None:
            query = query.where(R.c.resource == resource.value)
        if owner:
            query = query.where(R.c.owner == owner)
        filters = ["reservations", tenant_id, resource, owner]

        def read(conn: Connection) -> Page[Any]:
            load_tenant(conn, tenant_id)
            return keyset.page(conn, query, [R.c.created_at, R.c.id], filters, page_size, page_token)

        rows = self.db.transaction(read, write=False)
        return Page([_to_reservation(r) for r in rows.items], rows.next_page_token)
