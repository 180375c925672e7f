"""Merge requests.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merge_requests",
        sa.Column("seq", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("ticket_id", sa.String(length=36), nullable=False),
        sa.Column("branch", sa.String(length=250), nullable=False),
        sa.Column("commit_sha", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("merge_commit", sa.String(length=64), nullable=True),
        sa.Column("review_comments", sa.Text(), nullable=True),
        sa.Column("author_agent_id", sa.String(length=128), nullable=True),
        sa.Column("reviewer_agent_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint("ticket_id", "branch", name="ux_merge_requests_ticket_branch"),
    )
    op.create_index("ix_merge_requests_tenant", "merge_requests", ["tenant_id", "seq"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_merge_requests_tenant", table_name="merge_requests")
    op.drop_table("merge_requests")
