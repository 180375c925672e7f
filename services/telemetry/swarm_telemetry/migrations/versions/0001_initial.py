"""Initial telemetry schema: spans and the cost ledger.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spans",
        sa.Column("seq", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("span_id", sa.String(length=16), nullable=False),
        sa.Column("parent_span_id", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=False),
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_ns", sa.BigInteger(), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("service_name", sa.String(length=128), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("ticket_id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("trace_id", "span_id", name="ux_spans_trace_span"),
    )
    op.create_index("ix_spans_ticket", "spans", ["tenant_id", "ticket_id"], unique=False)
    op.create_index("ix_spans_tenant_start", "spans", ["tenant_id", "start_ns"], unique=False)
    op.create_index("ix_spans_trace", "spans", ["trace_id"], unique=False)
    op.create_index("ix_spans_received", "spans", ["received_at"], unique=False)
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("ticket_id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("request_type", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_creation_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd_micros", sa.BigInteger(), nullable=False),
        sa.Column("price_version", sa.String(length=32), nullable=False),
        sa.Column("unknown_model", sa.Boolean(), nullable=False),
        sa.Column("usage_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "request_id", name="ux_usage_request"),
    )
    op.create_index("ix_usage_tenant_time", "usage_records", ["tenant_id", "usage_at"], unique=False)
    op.create_index("ix_usage_ticket", "usage_records", ["tenant_id", "ticket_id"], unique=False)


def downgrade() -> None:
    op.drop_table("usage_records")
    op.drop_table("spans")
