"""Tenants: their plans and overrides. API keys live in `api_keys.py`,
counting in `counters.py`."""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_quota.domain import Plan, Resource, Tenant, check_overrides
from swarm_quota.stores.requests import REQUEST_LOG
from swarm_quota.tables import tenants
from swarmcommon import keyset
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import AlreadyExists, InvalidArgument, NotFound
from swarmcommon.idempotency import RequestKey
from swarmcommon.pagination import Page


def tenant_not_found(tenant_id: str) -> NotFound:
    return NotFound(f"tenant {tenant_id} not found", resource_type="tenant", resource_name=tenant_id)


def to_tenant(row: Any) -> Tenant:
    m = row._mapping
    return Tenant(
        id=m["id"],
        display_name=m["display_name"],
        plan=Plan(m["plan"]),
        overrides={Resource(k): int(v) for k, v in json.loads(m["overrides"]).items()},
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def load_tenant(conn: Connection, tenant_id: str) -> Tenant:
    row = conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id)).first()
    if row is None:
        raise tenant_not_found(tenant_id)
    return to_tenant(row)


def _overrides_json(overrides: dict[Resource, int]) -> str:
    return json.dumps({r.value: v for r, v in check_overrides(overrides).items()})


class TenantStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def create_tenant(
        self,
        tenant_id: str | None,
        display_name: str,
        plan: Plan,
        overrides: dict[Resource, int],
        key: RequestKey | None,
    ) -> Tenant:
        """A new tenant; `key` is scoped by `tenant_id`, or by "" when the service picks the id."""
        values = {"display_name": display_name, "plan": plan.value, "overrides": _overrides_json(overrides)}
        tid = tenant_id or f"t-{uuid.uuid4().hex[:12]}"

        def tx(conn: Connection) -> Tenant:
            now = self.clock.now()
            prior = REQUEST_LOG.lookup(conn, key)
            if prior is not None:
                return load_tenant(conn, prior["tenant_id"])  # a retried create
            REQUEST_LOG.claim(conn, key, now)
            if conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tid)).first() is not None:
                raise AlreadyExists(f"tenant {tid} already exists", resource_type="tenant", resource_name=tid)
            conn.execute(
                sa.insert(tenants).values(
                    id=tid,
                    **values,
                    request_id=key.request_id if key else None,
                    created_at=now,
                    updated_at=now,
                )
            )
            REQUEST_LOG.record(conn, key, {"tenant_id": tid})
            return load_tenant(conn, tid)

        try:
            return self.db.transaction(tx)
        except IntegrityError:
            # A concurrent create committed first: run again, so a retry with
            # its request_id gets the tenant, and another create of the same
            # id ALREADY_EXISTS.
            return self.db.transaction(tx)

    def get_tenant(self, tenant_id: str) -> Tenant:
        return self.db.transaction(lambda conn: load_tenant(conn, tenant_id), write=False)

    def list_tenants(self, plan: Plan | None, page_size: int, page_token: str) -> Page[Tenant]:
        query = sa.select(tenants)
        if plan is not None:
            query = query.where(tenants.c.plan == plan.value)
        return keyset.listing(
            self.db, query, [tenants.c.id], ["tenants", plan], page_size, page_token, to_tenant
        )

    def update_tenant(
        self,
        tenant_id: str,
        paths: list[str],
        display_name: str,
        plan: Plan | None,
        overrides: dict[Resource, int],
        key: RequestKey | None,
    ) -> Tenant:
        values = self._changes(paths, display_name, plan, overrides)

        def tx(conn: Connection) -> Tenant:
            now = self.clock.now()
            load_tenant(conn, tenant_id)
            if REQUEST_LOG.lookup(conn, key) is None:
                REQUEST_LOG.claim(conn, key, now)
                conn.execute(
                    sa.update(tenants).where(tenants.c.id == tenant_id).values(**values, updated_at=now)
                )
            return load_tenant(conn, tenant_id)

        return REQUEST_LOG.once(self.db, key, tx)

    @staticmethod
    def _changes(
        paths: list[str], display_name: str, plan: Plan | None, overrides: dict[Resource, int]
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for path in paths:
            if path == "display_name":
                values["display_name"] = display_name
            elif path == "plan":
                if plan is None:
                    raise InvalidArgument("tenant.plan", "must name a plan when update_mask has 'plan'")
                values["plan"] = plan.value
            elif path == "overrides":
                values["overrides"] = _overrides_json(overrides)
            else:
                raise InvalidArgument(
                    "update_mask", f"cannot update {path!r}; use display_name, plan or overrides"
                )
        if not values:
            raise InvalidArgument("update_mask", "name at least one of display_name, plan, overrides")
        return values
