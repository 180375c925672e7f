"""Webhook subscriptions: create (secret shown once), read, update, delete,
rotate the secret with a grace period for the old one. Every change honours
its request_id (see stores.requests)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_events.domain import (
    SECRET_PREFIX_LENGTH,
    CreatedWebhook,
    RotatedSecret,
    Signing,
    Webhook,
    WebhookChanges,
    WebhookState,
    check_changes,
    check_event_types,
    check_rotation_grace,
)
from swarm_events.signing import new_secret
from swarm_events.ssrf import Network, resolve_allowed
from swarm_events.stores import requests
from swarm_events.tables import webhooks
from swarmcommon import keyset
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import NotFound
from swarmcommon.pagination import Page

W = webhooks


def to_webhook(row: Any) -> Webhook:
    m = row._mapping
    return Webhook(
        id=m["id"],
        tenant_id=m["tenant_id"],
        url=m["url"],
        event_types=json.loads(m["event_types"]),
        description=m["description"],
        state=WebhookState(m["state"]),
        disabled_reason=m["disabled_reason"],
        disabled_at=m["disabled_at"],
        consecutive_failures=m["consecutive_failures"],
        last_success_at=m["last_success_at"],
        last_failure_at=m["last_failure_at"],
        secret_prefix=m["secret"][:SECRET_PREFIX_LENGTH],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def load_webhook(conn: Connection, tenant_id: str, webhook_id: str) -> Any:
    """The webhook's row; another tenant's is NOT_FOUND like a missing one."""
    row = conn.execute(sa.select(W).where(W.c.tenant_id == tenant_id, W.c.id == webhook_id)).first()
    if row is None:
        raise NotFound(f"webhook {webhook_id} not found", resource_type="webhook", resource_name=webhook_id)
    return row


class WebhookStore:
    def __init__(self, db: Database, clock: Clock, allowed_networks: Sequence[Network]) -> None:
        self.db = db
        self.clock = clock
        self.allowed = list(allowed_networks)

    def create(
        self,
        tenant_id: str,
        url: str,
        event_types: Sequence[str],
        description: str,
        key: requests.RequestKey | None,
    ) -> CreatedWebhook:
        types = check_event_types(event_types)
        if (prior := requests.find(self.db, key, CreatedWebhook)) is not None:
            return prior  # before resolving: a retry answers even if DNS changed since
        resolve_allowed(url, self.allowed)
        now = self.clock.now()

        def tx(conn: Connection) -> CreatedWebhook:
            webhook_id, secret = str(uuid.uuid4()), new_secret()
            conn.execute(
                sa.insert(W).values(
                    id=webhook_id,
                    tenant_id=tenant_id,
                    url=url,
                    event_types=json.dumps(types),
                    description=description,
                    secret=secret,
                    state=WebhookState.ACTIVE,
                    consecutive_failures=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            return CreatedWebhook(to_webhook(load_webhook(conn, tenant_id, webhook_id)), secret)

        return requests.once(self.db, key, CreatedWebhook, now, tx)

    def get(self, tenant_id: str, webhook_id: str) -> Webhook:
        return self.db.transaction(
            lambda conn: to_webhook(load_webhook(conn, tenant_id, webhook_id)), write=False
        )

    def signing(self, tenant_id: str, webhook_id: str) -> tuple[Webhook, Signing]:
        """A webhook and the secrets it signs with (for a test send)."""

        def read(conn: Connection) -> tuple[Webhook, Signing]:
            row = load_webhook(conn, tenant_id, webhook_id)
            return to_webhook(row), Signing(row.secret, row.previous_secret, row.previous_secret_expires_at)

        return self.db.transaction(read, write=False)

    def list_webhooks(
        self, tenant_id: str, state: WebhookState | None, page_size: int, page_token: str
    ) -> Page[Webhook]:
        query = sa.select(W).where(W.c.tenant_id == tenant_id)
        if state:
            query = query.where(W.c.state == state)
        order = [W.c.created_at, W.c.id]
        return keyset.listing(
            self.db, query, order, ["webhooks", tenant_id, state], page_size, page_token, to_webhook
        )

    def update(
        self, tenant_id: str, webhook_id: str, changes: WebhookChanges, key: requests.RequestKey | None
    ) -> Webhook:
        check_changes(changes)
        if (prior := requests.find(self.db, key, Webhook)) is not None:
            return prior
        if "url" in changes.paths:
            resolve_allowed(changes.url, self.allowed, "webhook.url")
        now = self.clock.now()
        values = _changed_values(changes, now)

        def tx(conn: Connection) -> Webhook:
            load_webhook(conn, tenant_id, webhook_id)
            conn.execute(sa.update(W).where(W.c.id == webhook_id).values(**values, updated_at=now))
            return to_webhook(load_webhook(conn, tenant_id, webhook_id))

        return requests.once(self.db, key, Webhook, now, tx)

    def delete(self, tenant_id: str, webhook_id: str, key: requests.RequestKey | None) -> None:

        def tx(conn: Connection) -> None:
            load_webhook(conn, tenant_id, webhook_id)
            conn.execute(sa.delete(W).where(W.c.id == webhook_id))

        requests.once(self.db, key, None, self.clock.now(), tx)

    def rotate(
        self, tenant_id: str, webhook_id: str, grace: timedelta | None, key: requests.RequestKey | None
    ) -> RotatedSecret:
        """A new secret; the old one keeps signing alongside it until the grace ends."""
        grace = check_rotation_grace(grace)
        now = self.clock.now()

        def tx(conn: Connection) -> RotatedSecret:
            row = load_webhook(conn, tenant_id, webhook_id)
            secret, expires = new_secret(), now + grace
            conn.execute(
                sa.update(W)
                .where(W.c.id == webhook_id)
                .values(
                    secret=secret,
                    previous_secret=row.secret,
                    previous_secret_expires_at=expires,
                    updated_at=now,
                )
            )
            return RotatedSecret(to_webhook(load_webhook(conn, tenant_id, webhook_id)), secret, expires)

        return requests.once(self.db, key, RotatedSecret, now, tx)


def _changed_values(changes: WebhookChanges, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "url" in changes.paths:
        values["url"] = changes.url
    if "event_types" in changes.paths:
        values["event_types"] = json.dumps(
            check_event_types(changes.event_types or [], "webhook.event_types")
        )
    if "description" in changes.paths:
        values["description"] = changes.description
    if "state" in changes.paths:
        values["state"] = changes.state
        if changes.state == WebhookState.ACTIVE:  # re-enabling starts a fresh failure run
            values.update(disabled_reason=None, disabled_at=None, consecutive_failures=0, failing_since=None)
        else:
            values.update(disabled_reason="disabled by the tenant", disabled_at=now)
    return values
