"""The events schema: the per-tenant event log."""

from __future__ import annotations

import sqlalchemy as sa

from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID

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
)
