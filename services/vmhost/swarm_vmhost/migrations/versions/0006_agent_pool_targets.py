"""Target pools: how many live agents of each role a tenant wants on this
host (swarm_vmhost.pool).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from swarmcommon.db import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_pool_targets",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("target_count", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.String(length=32), nullable=False),
        sa.Column("spawned", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("set_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "role"),
    )


def downgrade() -> None:
    op.drop_table("agent_pool_targets")
