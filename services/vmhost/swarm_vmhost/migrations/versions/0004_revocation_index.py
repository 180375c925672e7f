"""ListRevokedAgents reads agents that left the live states recently: index
them by when their row last changed.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_agents_updated", "agents", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_agents_updated", table_name="agents")
