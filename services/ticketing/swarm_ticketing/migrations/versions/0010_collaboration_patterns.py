"""Collaboration patterns: the pattern of a project's and a ticket's agents,
and an ensemble's coder attempts (tickets that work for an ensemble ticket).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("pattern", sa.String(length=16), nullable=False, server_default="custom"))
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("pattern", sa.String(length=16), nullable=False, server_default="custom"))
        batch.add_column(sa.Column("ensemble_of", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
    op.create_index(
        "ix_tickets_ensemble",
        "tickets",
        ["ensemble_of"],
        sqlite_where=sa.text("ensemble_of IS NOT NULL"),
        postgresql_where=sa.text("ensemble_of IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_tickets_ensemble", table_name="tickets")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("attempt")
        batch.drop_column("ensemble_of")
        batch.drop_column("pattern")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("pattern")
