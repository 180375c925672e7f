"""Lease progress: the steps a lease's heartbeats reported and when that
count last rose (the stale-lease check).

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

from swarmcommon.db import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("lease_progress", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("progressed_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("progressed_at")
        batch.drop_column("lease_progress")
