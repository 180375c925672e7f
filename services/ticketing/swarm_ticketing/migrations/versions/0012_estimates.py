"""Estimates: each ticket's complexity and estimate when it was created, and
the minutes its leases were held once done (the tenant's history).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("complexity_score", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("estimate_optimistic", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("estimate_expected", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("estimate_pessimistic", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("estimate_confidence", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("actual_minutes", sa.Float(), nullable=True))
    op.create_index(
        "ix_tickets_actuals",
        "tickets",
        ["tenant_id", "type", "complexity_score"],
        sqlite_where=sa.text("actual_minutes IS NOT NULL"),
        postgresql_where=sa.text("actual_minutes IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_tickets_actuals", table_name="tickets")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("actual_minutes")
        batch.drop_column("estimate_confidence")
        batch.drop_column("estimate_pessimistic")
        batch.drop_column("estimate_expected")
        batch.drop_column("estimate_optimistic")
        batch.drop_column("complexity_score")
