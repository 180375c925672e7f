"""Reservations: of gauges (VMs), held with Reserve while the thing exists
and given back with Release; and of estimated spend (COST_USD_MONTH), held
in the month's window while an LLM call runs and settled by a Release whose
`consume_amount` charges the actual cost in the same transaction. The charge
itself is `counters.Counters.charge`.

Settling is exactly-once by the reservation's state, not only by request
id: only the Release that moves `released_at` from NULL charges anything."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_quota.domain import (
    RESERVABLE,
    Reservation,
    Resource,
    Tenant,
    Usage,
    check_amount,
    check_consume_amount,
    check_counted,
)
from swarm_quota.stores.counters import Counters
from swarm_quota.stores.requests import REQUEST_LOG
from swarm_quota.stores.tenants import load_tenant
from swarm_quota.tables import reservations
from swarmcommon import keyset
from swarmcommon.db import Database
from swarmcommon.errors import InvalidArgument, NotFound, PermissionDenied
from swarmcommon.idempotency import RequestKey
from swarmcommon.pagination import Page

R = reservations


@dataclass(frozen=True)
class Released:
    """What one Release did: freed the reservation (False: it already was),
    and the spend it charged."""

    released: bool
    consumed: int


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
        if check_counted(resource) not in RESERVABLE:
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
        self,
        tenant_id: str,
        reservation_id: str,
        consume_amount: int,
        key: RequestKey | None,
        resources: Collection[Resource] | None = None,
    ) -> tuple[Reservation, Released, Usage]:
        """Give a reservation back, and for estimated spend charge the actual
        `consume_amount` in the same step; releasing twice changes nothing.
        A retry with the first call's request_id answers as it did.
        `resources`: what the caller may release (None: any)."""

        def tx(conn: Connection) -> tuple[Reservation, Released, Usage]:
            tenant = load_tenant(conn, tenant_id)
            if resources is not None and _load(conn, tenant_id, reservation_id).resource not in resources:
                raise PermissionDenied(
                    f"reservation {reservation_id} holds a resource this caller may not release",
                    reason="RESOURCE_NOT_ALLOWED",
                )
            now = self.clock.now()
            prior = REQUEST_LOG.lookup(conn, key)
            outcome = (
                Released(bool(prior["released"]), int(prior.get("consumed", 0)))
                if prior is not None
                else self._free(conn, tenant, reservation_id, consume_amount, now, key)
            )
            reservation = _load(conn, tenant_id, reservation_id)
            return reservation, outcome, self.counters.current(conn, tenant, reservation.resource)

        return REQUEST_LOG.once(self.db, key, tx)

    def _free(
        self,
        conn: Connection,
        tenant: Tenant,
        reservation_id: str,
        consume_amount: int,
        now: datetime,
        key: RequestKey | None,
    ) -> Released:
        # NOT_FOUND and a bad amount before the request id is taken.
        held = _load(conn, tenant.id, reservation_id)
        check_consume_amount(held.resource, consume_amount)
        REQUEST_LOG.claim(conn, key, now)
        freed = conn.execute(
            sa.update(R)
            .where(R.c.id == reservation_id, R.c.tenant_id == tenant.id, R.c.released_at.is_(None))
            .values(released_at=now)
            .returning(R.c.resource, R.c.amount, R.c.created_at)
        ).first()
        consumed = 0
        if freed is not None:
            resource = Resource(freed.resource)
            self.counters.give_back(conn, tenant.id, resource, freed.amount, freed.created_at)
            if consume_amount:
                # Spend that already happened: charged past the limit if need
                # be, in the window the estimate was held in.
                self.counters.charge(conn, tenant, resource, consume_amount, freed.created_at, overage=True)
                consumed = consume_amount
        outcome = Released(freed is not None, consumed)
        REQUEST_LOG.record(conn, key, {"released": outcome.released, "consumed": outcome.consumed})
        return outcome

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
