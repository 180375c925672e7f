"""The events schema: the per-tenant event log, webhooks, deliveries and
their attempts, and the answers to requests carrying a request_id."""

from __future__ import annotations

import sqlalchemy as sa

from swarm_events.domain import FINISHED_STATUSES, LIVE_STATUSES
from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID


def _status_in(statuses: tuple[str, ...]) -> sa.TextClause:
    listed = ", ".join(f"'{s}'" for s in statuses)
    return sa.text(f"status IN ({listed})")


LIVE = _status_in(LIVE_STATUSES)
FINISHED = _status_in(FINISHED_STATUSES)

metadata = sa.MetaData()

VERSION_TABLE = "alembic_version_events"

events = sa.Table(
    "events",
    metadata,
    # Arrival order: listing and (later) delivery follow it.
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    # The producer's outbox id: stable across re-sends, the webhook-id.
    sa.Column("event_id", sa.String(36), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("traceparent", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Index("ix_events_tenant", "tenant_id", "seq"),
    # Retention deletes by arrival time.
    sa.Index("ix_events_received", "received_at"),
)

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    # JSON list of event types, "*" for all.
    sa.Column("event_types", sa.Text, nullable=False),
    sa.Column("description", sa.String(500), nullable=False),
    # Signing needs the secret itself (HMAC), so it is stored; it is only
    # ever returned at creation and rotation.
    sa.Column("secret", sa.String(100), nullable=False),
    sa.Column("previous_secret", sa.String(100), nullable=True),
    sa.Column("previous_secret_expires_at", UTCDateTime, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("disabled_reason", sa.Text, nullable=True),
    sa.Column("disabled_at", UTCDateTime, nullable=True),
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
    sa.Column("last_success_at", UTCDateTime, nullable=True),
    sa.Column("last_failure_at", UTCDateTime, nullable=True),
    # Start of the current run of failures; a success clears it.
    sa.Column("failing_since", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_webhooks_tenant", "tenant_id", "created_at", "id"),
)

# One row per (event, subscribed webhook): the unit that is retried.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("webhook_id", sa.String(36), nullable=False),
    sa.Column("event_id", sa.String(36), nullable=False),
    # domain.DeliveryStatus: pending -> delivering -> succeeded | failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    # When a pending delivery is due; for `delivering`, when its claim lapses.
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("event_id", "webhook_id", name="ux_deliveries_event_webhook"),
    sa.Index("ix_deliveries_due", "next_attempt_at", sqlite_where=LIVE, postgresql_where=LIVE),
    # The dispatcher claims one endpoint's due deliveries at a time.
    sa.Index(
        "ix_deliveries_webhook_due", "webhook_id", "next_attempt_at", sqlite_where=LIVE, postgresql_where=LIVE
    ),
    # Retention: finished deliveries by their last change; live ones are never purged.
    sa.Index("ix_deliveries_finished", "updated_at", sqlite_where=FINISHED, postgresql_where=FINISHED),
)

# The delivery log: every attempt, as the receiver answered it.
delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("delivery_id", sa.String(36), nullable=False),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("webhook_id", sa.String(36), nullable=False),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("succeeded", sa.Boolean, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("response_body", sa.Text, nullable=False),
    sa.Column("response_truncated", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("next_retry_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # SendTestEvent attempts: no delivery row behind them (delivery_id is "").
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_attempts_webhook", "tenant_id", "webhook_id", "seq"),
    sa.Index("ix_attempts_created", "created_at"),
)

# AIP-155: the first answer to each (tenant, request_id), replayed to retries.
request_log = sa.Table(
    "request_log",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    # The call (e.g. "RotateWebhookSecret") and a hash of its arguments: the
    # same id for a different request is refused, not replayed.
    sa.Column("operation", sa.String(64), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    # The answer as JSON (it may hold a secret: it is what the caller was given).
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_request_log_created", "created_at"),
)
