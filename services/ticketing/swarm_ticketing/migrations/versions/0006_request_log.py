"""Request ids for every mutating call: request_log, and a request digest on
claim_requests; both indexed by age for the reaper to forget old ones.

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
        "request_log",
        sa.Column("tenant_id", sa.String(128), primary_key=True),
        sa.Column("operation", sa.String(32), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_request_log_created", "request_log", ["created_at"])
    with op.batch_alter_table("claim_requests") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
    op.create_index("ix_claim_requests_created", "claim_requests", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_claim_requests_created", table_name="claim_requests")
    with op.batch_alter_table("claim_requests") as batch:
        batch.drop_column("fingerprint")
    op.drop_index("ix_request_log_created", table_name="request_log")
    op.drop_table("request_log")
