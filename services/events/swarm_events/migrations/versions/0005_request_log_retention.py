"""Request ids for every mutating call (request_log), indexes for retention
and for claiming one endpoint's deliveries.

webhooks.request_id goes: CreateWebhook's request ids now live in
request_log with every other call's.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from swarmcommon.db import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LIVE = sa.text("status IN ('pending', 'delivering')")
FINISHED = sa.text("status IN ('succeeded', 'failed')")


def upgrade() -> None:
    op.create_table(
        "request_log",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "request_id"),
    )
    op.create_index("ix_request_log_created", "request_log", ["created_at"])
    op.create_index("ix_events_received", "events", ["received_at"])
    op.create_index(
        "ix_deliveries_webhook_due",
        "deliveries",
        ["webhook_id", "next_attempt_at"],
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_index(
        "ix_deliveries_finished",
        "deliveries",
        ["updated_at"],
        sqlite_where=FINISHED,
        postgresql_where=FINISHED,
    )
    op.create_index("ix_attempts_created", "delivery_attempts", ["created_at"])
    op.drop_index("ux_webhooks_request", table_name="webhooks")
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("request_id")


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))
    op.create_index(
        "ux_webhooks_request",
        "webhooks",
        ["tenant_id", "request_id"],
        unique=True,
        sqlite_where=sa.text("request_id IS NOT NULL"),
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )
    op.drop_index("ix_attempts_created", table_name="delivery_attempts")
    op.drop_index("ix_deliveries_finished", table_name="deliveries")
    op.drop_index("ix_deliveries_webhook_due", table_name="deliveries")
    op.drop_index("ix_events_received", table_name="events")
    op.drop_index("ix_request_log_created", table_name="request_log")
    op.drop_table("request_log")
