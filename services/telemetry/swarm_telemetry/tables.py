"""The telemetry schema: spans (per tenant, ticket, agent) and the LLM cost ledger."""

from __future__ import annotations

import sqlalchemy as sa

from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID

metadata = sa.MetaData()

VERSION_TABLE = "alembic_version_telemetry"

spans = sa.Table(
    "spans",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("trace_id", sa.String(32), nullable=False),
    sa.Column("span_id", sa.String(16), nullable=False),
    sa.Column("parent_span_id", sa.String(16), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    # SpanKind / SpanStatus values; NULL for OTLP's "unspecified" / "unset".
    sa.Column("kind", sa.String(16), nullable=True),
    sa.Column("status", sa.String(16), nullable=True),
    sa.Column("status_message", sa.Text, nullable=False),
    # Unix nanoseconds, as OTLP sends them.
    sa.Column("start_ns", sa.BigInteger, nullable=False),
    sa.Column("end_ns", sa.BigInteger, nullable=False),
    # JSON: span and resource attributes merged (span wins), and the events.
    sa.Column("attributes", sa.Text, nullable=False),
    sa.Column("events", sa.Text, nullable=False),
    sa.Column("service_name", sa.String(128), nullable=False),
    # From `swarm.*` attributes; "" when the span does not say (it is then
    # only shown as part of a trace a tenant's ticket leads to).
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("ticket_id", sa.String(64), nullable=False),
    sa.Column("agent_id", sa.String(128), nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    # A re-sent export stores nothing twice.
    sa.UniqueConstraint("trace_id", "span_id", name="ux_spans_trace_span"),
    sa.Index("ix_spans_ticket", "tenant_id", "ticket_id"),
    sa.Index("ix_spans_tenant_start", "tenant_id", "start_ns"),
    sa.Index("ix_spans_trace", "trace_id"),
    sa.Index("ix_spans_received", "received_at"),
)

# Seed §6's api_usage, priced from a versioned table in micro-dollars.
usage_records = sa.Table(
    "usage_records",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("request_id", sa.String(200), nullable=False),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("project_id", sa.String(64), nullable=False),
    sa.Column("ticket_id", sa.String(64), nullable=False),
    sa.Column("agent_id", sa.String(128), nullable=False),
    # A RequestType value.
    sa.Column("request_type", sa.String(32), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("cache_creation_input_tokens", sa.BigInteger, nullable=False),
    sa.Column("cache_read_input_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_usd_micros", sa.BigInteger, nullable=False),
    sa.Column("price_version", sa.String(32), nullable=False),
    sa.Column("unknown_model", sa.Boolean, nullable=False),
    sa.Column("usage_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "request_id", name="ux_usage_request"),
    sa.Index("ix_usage_tenant_time", "tenant_id", "usage_at"),
    sa.Index("ix_usage_ticket", "tenant_id", "ticket_id"),
)
