"""Webhook delivery: claim due deliveries, POST them signed, record every
attempt, retry on a schedule with jitter, disable endpoints that keep failing.

A delivery is claimed by moving it to `delivering` with a lease (its
next_attempt_at): a dispatcher that dies mid-POST leaves a lease that lapses,
and the delivery is claimed again (at-least-once; receivers dedupe on
`webhook-id`). On PostgreSQL the claim is FOR UPDATE SKIP LOCKED, so several
dispatchers share the work.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_events.signing import secrets_in_use, signature_headers
from swarm_events.ssrf import Network, pin
from swarm_events.store import Event, EventStore
from swarm_events.tables import deliveries, delivery_attempts, events, webhooks
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)
D, W = deliveries, webhooks
LIVE = ("pending", "delivering")


@dataclass(frozen=True)
class DeliveryPolicy:
    # Svix's schedule: after the 1st failure wait 5 s, then 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    jitter: float = 0.2
    timeout: float = 10.0
    disable_after: timedelta = timedelta(days=5)
    max_response_body: int = 20 * 1024


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    body: str
    truncated: bool
    error: str | None
    retry_after: float | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _retry_after(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None


class Dispatcher:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        store: EventStore,
        policy: DeliveryPolicy,
        allowed: Sequence[Network],
        workers: int = 4,
        poll: float = 0.2,
        batch: int = 25,
    ) -> None:
        self.db, self.clock, self.store = db, clock, store
        self.policy = policy
        self.allowed = list(allowed)
        self.workers = workers
        self.poll = poll
        # Deliveries one worker claims, sends and records at a time.
        self.batch = batch
        self._http = httpx.Client(timeout=policy.timeout, follow_redirects=False)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- claiming -------------------------------------------------------------------------

    def claim(self, limit: int) -> list[Any]:
        def tx(conn: Connection) -> list[Any]:
            now = self.clock.now()
            ids = [
                r.id
                for r in conn.execute(
                    sa.select(D.c.id)
                    .where(D.c.status.in_(LIVE), D.c.next_attempt_at <= now)
                    .order_by(D.c.next_attempt_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ]
            if not ids:
                return []
            lease = now + timedelta(seconds=self.policy.timeout * 3)
            conn.execute(
                sa.update(D)
                .where(D.c.id.in_(ids))
                .values(status="delivering", next_attempt_at=lease, updated_at=now)
            )
            # Everything a delivery needs, read in the claiming transaction.
            return list(
                conn.execute(
                    sa.select(
                        D,
                        events.c.type.label("event_type"),
                        events.c.data.label("event_data"),
                        events.c.created_at.label("event_created_at"),
                        W.c.state.label("hook_state"),
                        W.c.url.label("hook_url"),
                        W.c.secret.label("hook_secret"),
                        W.c.previous_secret.label("hook_previous_secret"),
                        W.c.previous_secret_expires_at.label("hook_previous_expires_at"),
                        W.c.failing_since.label("hook_failing_since"),
                    )
                    .join(events, events.c.event_id == D.c.event_id)
                    .outerjoin(W, W.c.id == D.c.webhook_id)
                    .where(D.c.id.in_(ids))
                ).all()
            )

        return self.db.transaction(tx)

    # -- one attempt ------------------------------------------------------------------------

    def _post(self, url: str, body: str, headers: dict[str, str]) -> Outcome:
        started = time.perf_counter()
        status, text, error, retry_after = None, "", None, None
        try:
            # Checked again at send time (DNS may have changed), and the
            # request goes to the very address that passed the check.
            target = pin(url, self.allowed)
            extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
            response = self._http.post(
                target.url,
                content=body.encode(),
                headers={**headers, "Host": target.host_header},
                extensions=extensions,
            )
            status, text = response.status_code, response.text
            retry_after = _retry_after(response.headers.get("retry-after"), datetime.now(UTC))
        except InvalidArgument as exc:
            error = f"blocked: {exc.message}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        limit = self.policy.max_response_body
        return Outcome(
            status,
            text[:limit],
            len(text) > limit,
            error,
            retry_after,
            int((time.perf_counter() - started) * 1000),
        )

    def _send(
        self,
        url: str,
        secrets: tuple[str, str | None, datetime | None],
        event_id: str,
        event_type: str,
        created_at: datetime,
        data: Any,
    ) -> Outcome:
        """POST one event, signed with every secret in use now."""
        body = json.dumps(
            {"event": event_type, "timestamp": created_at.isoformat().replace("+00:00", "Z"), "data": data},
            separators=(",", ":"),
        )
        now = self.clock.now()
        headers = signature_headers(event_id, event_type, now, body, secrets_in_use(*secrets, now))
        return self._post(url, body, headers)

    def send_test(self, tenant_id: str, webhook_id: str, event_type: str) -> Any:
        """Send one test event to a webhook now (even a disabled one, to check
        a fix) and log the attempt. The webhook's failure run is untouched."""
        hook = self.db.transaction(
            lambda conn: conn.execute(
                sa.select(W).where(W.c.id == webhook_id, W.c.tenant_id == tenant_id)
            ).first(),
            write=False,
        )
        if hook is None:
            raise NotFound(f"webhook {webhook_id} not found")
        event_id, now = str(uuid.uuid4()), self.clock.now()
        data = {"test": True, "webhook_id": webhook_id, "message": "A test event sent from Swarm."}
        outcome = self._send(
            hook.url,
            (hook.secret, hook.previous_secret, hook.previous_secret_expires_at),
            event_id,
            event_type,
            now,
            data,
        )
        row = {
            "id": str(uuid.uuid4()),
            "delivery_id": "",
            "tenant_id": tenant_id,
            "webhook_id": webhook_id,
            "event_id": event_id,
            "event_type": event_type,
            "attempt": 1,
            "succeeded": outcome.ok,
            "status_code": outcome.status_code,
            "response_body": outcome.body,
            "response_truncated": outcome.truncated,
            "error": outcome.error,
            "duration_ms": outcome.duration_ms,
            "next_retry_at": None,
            "created_at": now,
            "test": True,
        }
        self.db.transaction(lambda conn: conn.execute(sa.insert(delivery_attempts).values(**row)))
        return self.db.transaction(
            lambda conn: conn.execute(
                sa.select(delivery_attempts).where(delivery_attempts.c.id == row["id"])
            ).one(),
            write=False,
        )

    def attempt(self, delivery: Any) -> Outcome | None:
        """POST a claimed delivery (a row from `claim`); None when its webhook
        is no longer active (the delivery is then simply failed)."""
        if delivery.hook_state != "active":
            return None
        return self._send(
            delivery.hook_url,
            (delivery.hook_secret, delivery.hook_previous_secret, delivery.hook_previous_expires_at),
            delivery.event_id,
            delivery.event_type,
            delivery.event_created_at,
            json.loads(delivery.event_data),
        )

    def deliver(self, batch: Sequence[Any]) -> None:
        """One attempt for each claimed delivery, recorded together in one
        transaction (one write per batch rather than per delivery)."""
        outcomes = [(d, self.attempt(d)) for d in batch]

        def tx(conn: Connection) -> list[tuple[Any, str]]:
            disabled = []
            for delivery, outcome in outcomes:
                if outcome is None:
                    conn.execute(
                        sa.update(D)
                        .where(D.c.id == delivery.id)
                        .values(status="failed", updated_at=self.clock.now())
                    )
                elif reason := self._record(conn, delivery, outcome):
                    disabled.append((delivery, reason))
            return disabled

        for delivery, reason in self.db.transaction(tx):
            self._announce_disabled(delivery, reason)

    def _record(self, conn: Connection, delivery: Any, outcome: Outcome) -> str | None:
        """Store the attempt and its consequences; returns a reason if the webhook got disabled."""
        now = self.clock.now()
        attempt = delivery.attempts + 1
        status, next_at, disabled = "failed", None, None
        if outcome.ok:
            status = "succeeded"
            conn.execute(
                sa.update(W)
                .where(W.c.id == delivery.webhook_id)
                .values(consecutive_failures=0, last_success_at=now, failing_since=None)
            )
        else:
            failing_since = delivery.hook_failing_since or now
            conn.execute(
                sa.update(W)
                .where(W.c.id == delivery.webhook_id)
                .values(
                    consecutive_failures=W.c.consecutive_failures + 1,
                    last_failure_at=now,
                    failing_since=failing_since,
                )
            )
            if outcome.status_code == 410:
                disabled = "the endpoint answered 410 Gone"
            elif now - failing_since >= self.policy.disable_after:
                disabled = (
                    f"deliveries failed for {now - failing_since} (since {failing_since:%Y-%m-%dT%H:%M:%SZ})"
                )
            elif attempt <= len(self.policy.schedule):
                delay = self.policy.schedule[attempt - 1] * random.uniform(
                    1 - self.policy.jitter, 1 + self.policy.jitter
                )
                if outcome.retry_after is not None:
                    delay = max(delay, outcome.retry_after)
                status, next_at = "pending", now + timedelta(seconds=delay)
        if disabled:
            changed = conn.execute(
                sa.update(W)
                .where(W.c.id == delivery.webhook_id, W.c.state == "active")
                .values(state="disabled", disabled_reason=disabled, disabled_at=now, updated_at=now)
            ).rowcount
            if not changed:  # disabled already (earlier in this batch, or by its owner): say it once
                disabled = None
            conn.execute(
                sa.update(D)
                .where(D.c.webhook_id == delivery.webhook_id, D.c.status.in_(LIVE), D.c.id != delivery.id)
                .values(status="failed", updated_at=now)
            )
        conn.execute(
            sa.update(D)
            .where(D.c.id == delivery.id)
            .values(status=status, attempts=attempt, next_attempt_at=next_at or now, updated_at=now)
        )
        conn.execute(
            sa.insert(delivery_attempts).values(
                id=str(uuid.uuid4()),
                delivery_id=delivery.id,
                tenant_id=delivery.tenant_id,
                webhook_id=delivery.webhook_id,
                event_id=delivery.event_id,
                event_type=delivery.event_type,
                attempt=attempt,
                succeeded=outcome.ok,
                status_code=outcome.status_code,
                response_body=outcome.body,
                response_truncated=outcome.truncated,
                error=outcome.error,
                duration_ms=outcome.duration_ms,
                next_retry_at=next_at,
                created_at=now,
            )
        )
        return disabled

    def _announce_disabled(self, delivery: Any, reason: str) -> None:
        log.warning("webhook disabled", extra={"webhook_id": delivery.webhook_id, "reason": reason})
        self.store.publish(
            [
                Event(
                    id=str(uuid.uuid4()),
                    tenant_id=delivery.tenant_id,
                    type="webhook.disabled",
                    source="events",
                    subject=delivery.webhook_id,
                    data={"webhook_id": delivery.webhook_id, "url": delivery.hook_url, "reason": reason},
                    traceparent=None,
                    created_at=self.clock.now(),
                )
            ]
        )

    # -- running ------------------------------------------------------------------------------

    def run_once(self, limit: int = 50) -> int:
        batch = self.claim(limit)
        if batch:
            try:
                self.deliver(batch)
            except Exception:  # the claims' leases lapse and the batch is tried again
                log.exception("delivery batch failed unexpectedly", extra={"deliveries": len(batch)})
        return len(batch)

    def start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"dispatcher-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_once(limit=self.batch) == 0:
                    self._stop.wait(self.poll)
            except Exception:
                log.exception("dispatcher pass failed")
                self._stop.wait(self.poll)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.policy.timeout + 5)
        self._http.close()
