"""API keys: created with a secret shown once, stored as an HMAC of it under
the pepper, revocable; and the pepper itself in development mode."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from swarm_quota.domain import ApiKey, Tenant
from swarm_quota.stores.requests import REQUEST_LOG
from swarm_quota.stores.tenants import load_tenant
from swarm_quota.tables import api_keys, dev_secrets
from swarmcommon import keyset
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import InvalidArgument, NotFound, Unauthenticated
from swarmcommon.idempotency import RequestKey
from swarmcommon.pagination import Page

KEY_RE = re.compile(r"^swk_([0-9a-f]{12})_([A-Za-z0-9_-]{40,60})$")
LAST_USED_GRANULARITY = timedelta(minutes=1)
K = api_keys


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


def _load_key(conn: Connection, tenant_id: str, key_id: str) -> ApiKey:
    row = conn.execute(sa.select(K).where(K.c.tenant_id == tenant_id, K.c.id == key_id)).first()
    if row is None:
        raise NotFound(f"API key {key_id} not found", resource_type="api_key", resource_name=key_id)
    return to_key(row)


def dev_pepper(db: Database, clock: Clock) -> str:
    """The development-mode pepper of this database, made on first use.

    Kept in the database it protects, so it guards nothing against a stolen
    database: it exists so a local install needs no secret and keeps its keys
    across restarts. Production sets SWARM_QUOTA_API_KEY_PEPPER instead."""
    insert = (postgresql.insert if db.is_postgres else sqlite.insert)(dev_secrets)

    def tx(conn: Connection) -> str:
        conn.execute(
            insert.values(
                name="api_key_pepper", value=secrets.token_hex(32), created_at=clock.now()
            ).on_conflict_do_nothing(index_elements=[dev_secrets.c.name])
        )
        where = dev_secrets.c.name == "api_key_pepper"
        return str(conn.execute(sa.select(dev_secrets.c.value).where(where)).scalar_one())

    return db.transaction(tx)


class ApiKeys:
    def __init__(self, db: Database, clock: Clock, pepper: str) -> None:
        self.db = db
        self.clock = clock
        self._pepper = pepper.encode()

    def _hash(self, secret: str) -> str:
        return hmac.new(self._pepper, secret.encode(), hashlib.sha256).hexdigest()

    def create(
        self, tenant_id: str, display_name: str, expires_at: datetime | None, key: RequestKey | None
    ) -> tuple[ApiKey, str]:
        """A new key and its secret; the secret is not stored and never shown again.

        A retry with the same request_id gets the same key with an empty
        secret: the secret cannot be recovered (revoke the key and make another)."""
        if expires_at is not None and expires_at <= self.clock.now():
            raise InvalidArgument("expire_time", "must be in the future")
        prefix = secrets.token_hex(6)
        secret = f"swk_{prefix}_{secrets.token_urlsafe(36)}"

        def tx(conn: Connection) -> tuple[ApiKey, str]:
            now = self.clock.now()
            load_tenant(conn, tenant_id)
            prior = REQUEST_LOG.lookup(conn, key)
            if prior is not None:
                return _load_key(conn, tenant_id, prior["api_key_id"]), ""
            REQUEST_LOG.claim(conn, key, now)
            key_id = str(uuid.uuid4())
            conn.execute(
                sa.insert(K).values(
                    id=key_id,
                    tenant_id=tenant_id,
                    display_name=display_name,
                    prefix=prefix,
                    secret_hash=self._hash(secret),
                    request_id=key.request_id if key else None,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            REQUEST_LOG.record(conn, key, {"api_key_id": key_id})
            return _load_key(conn, tenant_id, key_id), secret

        return REQUEST_LOG.once(self.db, key, tx)

    def page(self, tenant_id: str, show_revoked: bool, page_size: int, page_token: str) -> Page[ApiKey]:
        query = sa.select(K).where(K.c.tenant_id == tenant_id)
        if not show_revoked:
            query = query.where(K.c.revoked_at.is_(None))
        filters = ["keys", tenant_id, show_revoked]

        def read(conn: Connection) -> Page[Any]:
            load_tenant(conn, tenant_id)
            return keyset.page(conn, query, [K.c.created_at, K.c.id], filters, page_size, page_token)

        rows = self.db.transaction(read, write=False)
        return Page([to_key(r) for r in rows.items], rows.next_page_token)

    def revoke(self, tenant_id: str, key_id: str, key: RequestKey | None) -> ApiKey:
        """Revoke now; revoking a revoked key changes nothing."""

        def tx(conn: Connection) -> ApiKey:
            now = self.clock.now()
            # The prior answer is looked up before the key is read: read the
            # other way round, a duplicate committing in between would be
            # answered with the key as it was before that revoke.
            if REQUEST_LOG.lookup(conn, key) is not None:
                return _load_key(conn, tenant_id, key_id)  # a retried revoke
            current = _load_key(conn, tenant_id, key_id)
            REQUEST_LOG.claim(conn, key, now)
            if current.revoked_at is None:
                conn.execute(sa.update(K).where(K.c.id == key_id).values(revoked_at=now))
            return _load_key(conn, tenant_id, key_id)

        return REQUEST_LOG.once(self.db, key, tx)

    def authenticate(self, secret: str) -> tuple[Tenant, ApiKey]:
        """The tenant of a live key; UNAUTHENTICATED otherwise, without saying why."""
        refused = Unauthenticated("invalid API key")
        match = KEY_RE.match(secret)
        if match is None:
            raise refused
        digest = self._hash(secret)
        now = self.clock.now()
        row = self.db.transaction(
            lambda conn: conn.execute(sa.select(K).where(K.c.prefix == match.group(1))).first(),
            write=False,
        )
        if row is None or not hmac.compare_digest(digest, row.secret_hash):
            raise refused
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
            raise refused
        if row.last_used_at is None or row.last_used_at < now - LAST_USED_GRANULARITY:
            self.db.transaction(
                lambda conn: conn.execute(sa.update(K).where(K.c.id == row.id).values(last_used_at=now))
            )
        tenant = self.db.transaction(lambda conn: load_tenant(conn, row.tenant_id), write=False)
        return tenant, to_key(row)
