"""Tenants and API keys. Quota counting lives in `counters.py`."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_quota.domain import ApiKey, Plan, Resource, Tenant, check_overrides
from swarm_quota.tables import api_keys, tenants
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from swarmcommon.pagination import Page, PageToken

KEY_RE = re.compile(r"^swk_([0-9a-f]{12})_([A-Za-z0-9_-]{40,60})$")
LAST_USED_GRANULARITY = timedelta(minutes=1)


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


def to_key(row: Any) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=m["id"],
        tenant_id=m["tenant_id"],
        display_name=m["display_name"],
        prefix=f"swk_{m['prefix']}",
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
    )


def load_tenant(conn: Connection, tenant_id: str) -> Tenant:
    row = conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id)).first()
    if row is None:
        raise tenant_not_found(tenant_id)
    return to_tenant(row)


class TenantStore:
    def __init__(self, db: Database, clock: Clock, pepper: str) -> None:
        self.db = db
        self.clock = clock
        self._pepper = pepper.encode()

    # -- tenants --------------------------------------------------------------------

    def create_tenant(
        self,
        tenant_id: str | None,
        display_name: str,
        plan: Plan,
        overrides: dict[Resource, int],
        request_id: str | None,
    ) -> Tenant:
        check_overrides(overrides)
        tid = tenant_id or f"t-{uuid.uuid4().hex[:12]}"

        def tx(conn: Connection) -> Tenant:
            existing = conn.execute(sa.select(tenants).where(tenants.c.id == tid)).first()
            if existing is not None:
                if request_id and existing.request_id == request_id:
                    return to_tenant(existing)  # a retried create
                raise AlreadyExists(f"tenant {tid} already exists", resource_type="tenant", resource_name=tid)
            now = self.clock.now()
            conn.execute(
                sa.insert(tenants).values(
                    id=tid,
                    display_name=display_name,
                    plan=plan.value,
                    overrides=json.dumps({r.value: v for r, v in overrides.items()}),
                    request_id=request_id,
                    created_at=now,
                    updated_at=now,
                )
            )
            return load_tenant(conn, tid)

        try:
            return self.db.transaction(tx)
        except IntegrityError:
            # A concurrent create of the same id committed first: run again,
            # so a retry with its request_id gets the tenant, others
            # ALREADY_EXISTS.
            return self.db.transaction(tx)

    def get_tenant(self, tenant_id: str) -> Tenant:
        return self.db.transaction(lambda conn: load_tenant(conn, tenant_id), write=False)

    def list_tenants(self, plan: Plan | None, page_size: int, page_token: str) -> Page[Tenant]:
        token = PageToken(["tenants", plan])
        key = token.decode(page_token, (str,))
        query = sa.select(tenants).order_by(tenants.c.id).limit(page_size + 1)
        if key is not None:
            query = query.where(tenants.c.id > key[0])
        if plan is not None:
            query = query.where(tenants.c.plan == plan.value)
        rows = self.db.transaction(lambda conn: conn.execute(query).all(), write=False)
        items = [to_tenant(r) for r in rows[:page_size]]
        return Page(items, token.encode([items[-1].id]) if len(rows) > page_size else "")

    def update_tenant(
        self,
        tenant_id: str,
        paths: list[str],
        display_name: str,
        plan: Plan | None,
        overrides: dict[Resource, int],
    ) -> Tenant:
        values: dict[str, Any] = {}
        for path in paths:
            if path == "display_name":
                values["display_name"] = display_name
            elif path == "plan":
                if plan is None:
                    raise InvalidArgument("tenant.plan", "must name a plan when update_mask has 'plan'")
                values["plan"] = plan.value
            elif path == "overrides":
                values["overrides"] = json.dumps({r.value: v for r, v in check_overrides(overrides).items()})
            else:
                raise InvalidArgument(
                    "update_mask", f"cannot update {path!r}; use display_name, plan or overrides"
                )
        if not values:
            raise InvalidArgument("update_mask", "name at least one of display_name, plan, overrides")

        def tx(conn: Connection) -> Tenant:
            load_tenant(conn, tenant_id)
            conn.execute(
                sa.update(tenants)
                .where(tenants.c.id == tenant_id)
                .values(**values, updated_at=self.clock.now())
            )
            return load_tenant(conn, tenant_id)

        return self.db.transaction(tx)

    # -- API keys ---------------------------------------------------------------------

    def _hash(self, secret: str) -> str:
        return hmac.new(self._pepper, secret.encode(), hashlib.sha256).hexdigest()

    def create_key(
        self, tenant_id: str, display_name: str, expires_at: datetime | None, request_id: str | None
    ) -> tuple[ApiKey, str]:
        """A new key and its secret; the secret is not stored and never shown again."""
        if expires_at is not None and expires_at <= self.clock.now():
            raise InvalidArgument("expire_time", "must be in the future")
        prefix = secrets.token_hex(6)
        secret = f"swk_{prefix}_{secrets.token_urlsafe(36)}"

        def tx(conn: Connection) -> tuple[ApiKey, str]:
            load_tenant(conn, tenant_id)
            if request_id:
                prior = conn.execute(
                    sa.select(api_keys).where(
                        api_keys.c.tenant_id == tenant_id, api_keys.c.request_id == request_id
                    )
                ).first()
                if prior is not None:
                    return to_key(prior), ""  # a retry: same key, secret not recoverable
            key_id = str(uuid.uuid4())
            conn.execute(
                sa.insert(api_keys).values(
                    id=key_id,
                    tenant_id=tenant_id,
                    display_name=display_name,
                    prefix=prefix,
                    secret_hash=self._hash(secret),
                    request_id=request_id,
                    created_at=self.clock.now(),
                    expires_at=expires_at,
                )
            )
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).one()
            return to_key(row), secret

        try:
            return self.db.transaction(tx)
        except IntegrityError:
            if not request_id:
                raise
            # A concurrent call with the same request_id committed first.
            return self.db.transaction(tx)

    def list_keys(self, tenant_id: str, show_revoked: bool, page_size: int, page_token: str) -> Page[ApiKey]:
        token = PageToken(["keys", tenant_id, show_revoked])
        key = token.decode(page_token, (datetime, str))
        k = api_keys
        query = (
            sa.select(k)
            .where(k.c.tenant_id == tenant_id)
            .order_by(k.c.created_at, k.c.id)
            .limit(page_size + 1)
        )
        if key is not None:
            query = query.where(
                sa.tuple_(k.c.created_at, k.c.id) > sa.tuple_(sa.literal(key[0]), sa.literal(key[1]))
            )
        if not show_revoked:
            query = query.where(k.c.revoked_at.is_(None))

        def read(conn: Connection) -> list[Any]:
            load_tenant(conn, tenant_id)
            return list(conn.execute(query).all())

        rows = self.db.transaction(read, write=False)
        items = [to_key(r) for r in rows[:page_size]]
        nxt = token.encode([items[-1].created_at.isoformat(), items[-1].id]) if len(rows) > page_size else ""
        return Page(items, nxt)

    def revoke_key(self, tenant_id: str, key_id: str) -> ApiKey:
        def tx(conn: Connection) -> ApiKey:
            k = api_keys
            row = conn.execute(sa.select(k).where(k.c.tenant_id == tenant_id, k.c.id == key_id)).first()
            if row is None:
                raise NotFound(f"API key {key_id} not found", resource_type="api_key", resource_name=key_id)
            if row.revoked_at is None:
                conn.execute(sa.update(k).where(k.c.id == key_id).values(revoked_at=self.clock.now()))
            return to_key(conn.execute(sa.select(k).where(k.c.id == key_id)).one())

        return self.db.transaction(tx)

    def authenticate(self, secret: str) -> tuple[Tenant, ApiKey]:
        """The tenant of a live key; UNAUTHENTICATED otherwise, without saying why."""
        refused = Unauthenticated("invalid API key")
        match = KEY_RE.match(secret)
        if match is None:
            raise refused
        digest = self._hash(secret)
        now = self.clock.now()
        row = self.db.transaction(
            lambda conn: conn.execute(sa.select(api_keys).where(api_keys.c.prefix == match.group(1))).first(),
            write=False,
        )
        if row is None or not hmac.compare_digest(digest, row.secret_hash):
            raise refused
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
            raise refused
        if row.last_used_at is None or row.last_used_at < now - LAST_USED_GRANULARITY:
            self.db.transaction(
                lambda conn: conn.execute(
                    sa.update(api_keys).where(api_keys.c.id == row.id).values(last_used_at=now)
                )
            )
        tenant = self.get_tenant(row.tenant_id)
        return tenant, to_key(row)
