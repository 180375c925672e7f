"""Since when an agent has been on its ticket (the stale-ticket check), and
TerminateAgent's request ids.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from swarmcommon.db import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("ticket_since", UTCDateTime(), nullable=True))
    # Agents already busy start their clock now rather than never.
    op.execute("UPDATE agents SET ticket_since = updated_at WHERE ticket_id IS NOT NULL")
    op.create_table(
        "terminate_requests",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "request_id"),
    )


def downgrade() -> None:
    op.drop_table("terminate_requests")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("ticket_since")
