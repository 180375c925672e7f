"""When an agent stopped holding a max_vms reservation, so the reconciler can
give back those a crash (or an unreachable quota) left held.

Agents already terminated count as settled: vmhost released their
reservations when it terminated them, as far as it could tell.

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

UNSETTLED = sa.text("reservation_settled_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("reservation_settled_at", UTCDateTime(), nullable=True))
    op.execute("UPDATE agents SET reservation_settled_at = terminated_at WHERE state = 'terminated'")
    op.create_index(
        "ix_agents_unsettled",
        "agents",
        ["state", "updated_at"],
        sqlite_where=UNSETTLED,
        postgresql_where=UNSETTLED,
    )


def downgrade() -> None:
    op.drop_index("ix_agents_unsettled", table_name="agents")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("reservation_settled_at")
