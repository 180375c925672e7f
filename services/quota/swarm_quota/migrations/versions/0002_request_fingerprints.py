"""Request ids for every mutating call: a request digest on quota_requests;
dev_secrets for the development-mode API-key pepper.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from swarmcommon.db import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quota_requests") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
    op.create_table(
        "dev_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dev_secrets")
    with op.batch_alter_table("quota_requests") as batch:
        batch.drop_column("fingerprint")
