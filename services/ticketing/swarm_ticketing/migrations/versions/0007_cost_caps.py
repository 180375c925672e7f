"""LLM cost caps: a default per project, an optional cap per ticket, and
why a quarantined ticket is held (failures, or its budget).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("ticket_cost_cap_usd_micros", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("cost_cap_usd_micros", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("quarantine_cause", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("quarantine_cause")
        batch.drop_column("cost_cap_usd_micros")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("ticket_cost_cap_usd_micros")
