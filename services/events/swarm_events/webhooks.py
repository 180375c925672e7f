"""Webhook subscriptions: create (secret shown once), read, update, delete,
rotate the secret with a grace period for the old one."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_events.signing import new_secret
from swarm_events.ssrf import Network, resolve_allowed
from swarm_events.tables import deliveries, delivery_attempts, webhooks
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition, InvalidArgument, NotFound
from swarmcommon.pagination import Page, PageToken

W = webhooks
ACTIVE, DISABLED = "active", "disabled"
DEFAULT_ROTATION_GRACE = timedelta(hours=24)
MAX_EVENT_TYPES = 50
EVENT_TYPE_RE = re.compile(r"^(\*|[a-z][a-z_]*(\.[a-z_]+)+)$")


@dataclass(frozen=True)
class WebhookRecord:
    id: str
    tenant_id: str
    url: str
    event_types: list[str]
    description: str
    state: str
    disabled_reason: str | None
    disabled_at: datetime | None
    consecutive_failures: int
    last_success_at: datetime | None
    last_failure_at: datetime | None
    secret_prefix: str
    created_at: datetime
    updated_at: datetime


def _to_record(row: Any) -> WebhookRecord:
    m = row._mapping
    return WebhookRecord(
        id=m["id"],
        tenant_id=m["tenant_id"],
        url=m["url"],
        event_types=json.loads(m["event_types"]),
        description=m["description"],
        state=m["state"],
        disabled_reason=m["disabled_reason"],
        disabled_at=m["disabled_at"],
        consecutive_failures=m["consecutive_failures"],
        last_success_at=m["last_success_at"],
        last_failure_at=m["last_failure_at"],
        secret_prefix=m["secret"][:12],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def check_event_types(types: Sequence[str], field: str = "event_types") -> list[str]:
    if not types:
        raise InvalidArgument(field, 'name at least one event type, or "*" for all')
    if len(types) > MAX_EVENT_TYPES:
        raise InvalidArgument(field, f"too many event types ({len(types)} > {MAX_EVENT_TYPES})")
    for i, t in enumerate(types):
        if len(t) > 64 or not EVENT_TYPE_RE.match(t):
            raise InvalidArgument(
                f"{field}[{i}]", f'must be an event type like "ticket.completed" or "*" (got {t[:64]!r})'
            )
    return list(dict.fromkeys(types))


class WebhookStore:
    def __init__(self, db: Database, clock: Clock, allowed_networks: Sequence[Network]) -> None:
        self.db = db
        self.clock = clock
        self.allowed = list(allowed_networks)

    def _load(self, conn: Connection, tenant_id: str, webhook_id: str) -> Any:
        row = conn.execute(sa.select(W).where(W.c.tenant_id == tenant_id, W.c.id == webhook_id)).first()
        if row is None:
            raise NotFound(
                f"webhook {webhook_id} not found", resource_type="webhook", resource_name=webhook_id
            )
        return row

    def create(
        self, tenant_id: str, url: str, event_types: Sequence[str], description: str, request_id: str | None
    ) -> tuple[WebhookRecord, str]:
        resolve_allowed(url, self.allowed)
        types = check_event_types(event_types)

        def tx(conn: Connection) -> tuple[WebhookRecord, str]:
            if request_id:
                prior = conn.execute(
                    sa.select(W).where(W.c.tenant_id == tenant_id, W.c.request_id == request_id)
                ).first()
                if prior is not None:
                    return _to_record(prior), ""  # a retry: the secret is not shown twice
            now = self.clock.now()
            webhook_id, secret = str(uuid.uuid4()), new_secret()
            conn.execute(
                sa.insert(W).values(
                    id=webhook_id,
                    tenant_id=tenant_id,
                    url=url,
                    event_types=json.dumps(types),
                    description=description,
                    secret=secret,
                    state=ACTIVE,
                    consecutive_failures=0,
                    request_id=request_id,
                    created_at=now,
                    updated_at=now,
                )
            )
            return _to_record(self._load(conn, tenant_id, webhook_id)), secret

        return self.db.transaction(tx)

    def get(self, tenant_id: str, webhook_id: str) -> WebhookRecord:
        return self.db.transaction(
            lambda conn: _to_record(self._load(conn, tenant_id, webhook_id)), write=False
        )

    def list_webhooks(
        self, tenant_id: str, state: str | None, page_size: int, page_token: str
    ) -> Page[WebhookRecord]:
        token = PageToken(["webhooks", tenant_id, state])
        key = token.decode(page_token, (datetime, str))
        query = sa.select(W).where(W.c.tenant_id == tenant_id)
        if state:
            query = query.where(W.c.state == state)
        if key is not None:
            after = sa.tuple_(sa.literal(key[0]), sa.literal(key[1]))
            query = query.where(sa.tuple_(W.c.created_at, W.c.id) > after)
        query = query.order_by(W.c.created_at, W.c.id).limit(page_size + 1)
        rows = self.db.transaction(lambda conn: conn.execute(query).all(), write=False)
        items = [_to_record(r) for r in rows[:page_size]]
        nxt = token.encode([items[-1].created_at.isoformat(), items[-1].id]) if len(rows) > page_size else ""
        return Page(items, nxt)

    def update(
        self,
        tenant_id: str,
        webhook_id: str,
        paths: Sequence[str],
        url: str,
        event_types: Sequence[str],
        description: str,
        state: str | None,
    ) -> WebhookRecord:
        values: dict[str, Any] = {}
        for path in paths:
            if path == "url":
                resolve_allowed(url, self.allowed, "webhook.url")
                values["url"] = url
            elif path == "event_types":
                values["event_types"] = json.dumps(check_event_types(event_types, "webhook.event_types"))
            elif path == "description":
                values["description"] = description
            elif path == "state":
                if state is None:
                    raise InvalidArgument(
                        "webhook.state", "must be ACTIVE or DISABLED when update_mask has 'state'"
                    )
                values["state"] = state
                if state == ACTIVE:  # re-enabling starts a fresh failure run
                    values.update(disabled_reason=None, disabled_at=None, consecutive_failures=0)
                else:
                    values.update(disabled_reason="disabled by the tenant", disabled_at=self.clock.now())
            else:
                raise InvalidArgument(
                    "update_mask", f"cannot update {path!r}; use url, event_types, description, state"
                )
        if not values:
            raise InvalidArgument("update_mask", "name at least one of url, event_types, description, state")

        def tx(conn: Connection) -> WebhookRecord:
            self._load(conn, tenant_id, webhook_id)
            conn.execute(
                sa.update(W).where(W.c.id == webhook_id).values(**values, updated_at=self.clock.now())
            )
            return _to_record(self._load(conn, tenant_id, webhook_id))

        return self.db.transaction(tx)

    def delete(self, tenant_id: str, webhook_id: str) -> None:
        def tx(conn: Connection) -> None:
            self._load(conn, tenant_id, webhook_id)
            conn.execute(sa.delete(W).where(W.c.id == webhook_id))

        self.db.transaction(tx)

    def rotate(
        self, tenant_id: str, webhook_id: str, grace: timedelta | None
    ) -> tuple[WebhookRecord, str, datetime]:
        """A new secret; the old one keeps signing alongside it until the grace ends."""
        grace = DEFAULT_ROTATION_GRACE if grace is None else grace
        if not timedelta(0) <= grace <= timedelta(days=7):
            raise InvalidArgument("old_secret_grace_period", "must be between 0 and 7 days")

        def tx(conn: Connection) -> tuple[WebhookRecord, str, datetime]:
            row = self._load(conn, tenant_id, webhook_id)
            now = self.clock.now()
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
            return _to_record(self._load(conn, tenant_id, webhook_id)), secret, expires

        return self.db.transaction(tx)

    def list_attempts(
        self,
        tenant_id: str,
        webhook_id: str,
        page_size: int,
        page_token: str,
        event_id: str | None = None,
        delivery_id: str | None = None,
        succeeded: bool | None = None,
    ) -> Page[Any]:
        """The delivery log of one webhook, newest first."""
        a = delivery_attempts
        token = PageToken(["attempts", tenant_id, webhook_id, event_id, delivery_id, succeeded])
        key = token.decode(page_token, (int,))
        query = sa.select(a).where(a.c.tenant_id == tenant_id, a.c.webhook_id == webhook_id)
        if event_id:
            query = query.where(a.c.event_id == event_id)
        if delivery_id:
            query = query.where(a.c.delivery_id == delivery_id)
        if succeeded is not None:
            query = query.where(a.c.succeeded == succeeded)
        if key is not None:
            query = query.where(a.c.seq < key[0])
        query = query.order_by(a.c.seq.desc()).limit(page_size + 1)
        rows = self.db.transaction(lambda conn: conn.execute(query).all(), write=False)
        nxt = token.encode([rows[page_size - 1].seq]) if len(rows) > page_size else ""
        return Page(list(rows[:page_size]), nxt)

    # -- resending ------------------------------------------------------------------------

    def _require_active(self, conn: Connection, tenant_id: str, webhook_id: str) -> None:
        hook = self._load(conn, tenant_id, webhook_id)
        if hook.state != ACTIVE:
            raise FailedPrecondition(
                f"webhook {webhook_id} is disabled ({hook.disabled_reason}); re-enable it first",
                reason="WEBHOOK_DISABLED",
            )

    def redeliver(self, tenant_id: str, delivery_id: str) -> Any:
        """Queue one delivery again now, whatever its state; same event id."""
        d = deliveries

        def tx(conn: Connection) -> Any:
            row = conn.execute(sa.select(d).where(d.c.id == delivery_id, d.c.tenant_id == tenant_id)).first()
            if row is None:
                raise NotFound(f"delivery {delivery_id} not found")
            self._require_active(conn, tenant_id, row.webhook_id)
            now = self.clock.now()
            conn.execute(
                sa.update(d)
                .where(d.c.id == delivery_id)
                .values(status="pending", next_attempt_at=now, updated_at=now)
            )
            return conn.execute(sa.select(d).where(d.c.id == delivery_id)).one()

        return self.db.transaction(tx)

    def recover(self, tenant_id: str, webhook_id: str, since: datetime) -> int:
        """Re-queue every failed delivery of a webhook created at or after `since`."""
        d = deliveries

        def tx(conn: Connection) -> int:
            self._require_active(conn, tenant_id, webhook_id)
            now = self.clock.now()
            result = conn.execute(
                sa.update(d)
                .where(
                    d.c.tenant_id == tenant_id,
                    d.c.webhook_id == webhook_id,
                    d.c.status == "failed",
                    d.c.created_at >= since,
                )
                .values(status="pending", next_attempt_at=now, updated_at=now)
            )
            return int(result.rowcount)

        return self.db.transaction(tx)
