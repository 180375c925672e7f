"""Projects name their git repository; tickets carry it to agents.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("projects", "tickets"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("repository", sa.String(length=2048), nullable=False, server_default="")
            )
            batch.add_column(
                sa.Column("base_branch", sa.String(length=250), nullable=False, server_default="main")
            )


def downgrade() -> None:
    for table in ("tickets", "projects"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("base_branch")
            batch.drop_column("repository")
