"""Initial ticketing schema: projects, tickets, dependencies, claims, audit, outbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("ticket_id", sa.String(length=36), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=128), nullable=True),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.Column("rationale", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index(
        "ix_audit_ticket",
        "audit_events",
        ["tenant_id", "ticket_id", "seq"],
        unique=False,
    )
    op.create_table(
        "outbox",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("traceparent", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("ticket_count", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_projects_tenant_created",
        "projects",
        ["tenant_id", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "ux_projects_request",
        "projects",
        ["tenant_id", "request_id"],
        unique=True,
        sqlite_where=sa.text("request_id IS NOT NULL"),
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )
    op.create_table(
        "tickets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("stages", sa.String(length=200), nullable=False),
        sa.Column("stage_index", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("pending_parents", sa.Integer(), nullable=False),
        sa.Column("parent_ids", sa.Text(), nullable=False),
        sa.Column("child_count", sa.Integer(), nullable=False),
        sa.Column("failure_count", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", UTCDateTime(), nullable=True),
        sa.Column("last_failure_reason", sa.Text(), nullable=True),
        sa.Column("quarantined_at", UTCDateTime(), nullable=True),
        sa.Column("quarantine_reason", sa.Text(), nullable=True),
        sa.Column("claim_token", sa.String(length=36), nullable=True),
        sa.Column("claim_expires_at", UTCDateTime(), nullable=True),
        sa.Column("claimed_by_agent_id", sa.String(length=128), nullable=True),
        sa.Column("claimed_at", UTCDateTime(), nullable=True),
        sa.Column("last_submitted_token", sa.String(length=36), nullable=True),
        sa.Column("result_json", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_tickets_agent",
        "tickets",
        ["tenant_id", "claimed_by_agent_id"],
        unique=False,
        sqlite_where=sa.text("state IN ('assigned', 'in_progress')"),
        postgresql_where=sa.text("state IN ('assigned', 'in_progress')"),
    )
    op.create_index(
        "ix_tickets_lease_expiry",
        "tickets",
        ["claim_expires_at"],
        unique=False,
        sqlite_where=sa.text("state IN ('assigned', 'in_progress')"),
        postgresql_where=sa.text("state IN ('assigned', 'in_progress')"),
    )
    op.create_index(
        "ix_tickets_leased",
        "tickets",
        ["tenant_id", "claim_expires_at"],
        unique=False,
        sqlite_where=sa.text("state IN ('assigned', 'in_progress')"),
        postgresql_where=sa.text("state IN ('assigned', 'in_progress')"),
    )
    op.create_index(
        "ix_tickets_claimable",
        "tickets",
        ["tenant_id", sa.text("priority DESC"), "created_at", "ordinal"],
        unique=False,
        sqlite_where=sa.text("state = 'ready'"),
        postgresql_where=sa.text("state = 'ready'"),
    )
    op.create_index(
        "ix_tickets_listing",
        "tickets",
        ["tenant_id", "created_at", "ordinal", "id"],
        unique=False,
    )
    op.create_index("ix_tickets_project", "tickets", ["project_id", "state"], unique=False)
    op.create_index(
        "ix_tickets_quarantined",
        "tickets",
        ["tenant_id", "quarantined_at", "id"],
        unique=False,
        sqlite_where=sa.text("state = 'quarantined'"),
        postgresql_where=sa.text("state = 'quarantined'"),
    )
    op.create_table(
        "claim_requests",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("ticket_id", sa.String(length=36), nullable=False),
        sa.Column("claim_token", sa.String(length=36), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
        ),
        sa.PrimaryKeyConstraint("tenant_id", "agent_id", "request_id"),
    )
    op.create_table(
        "ticket_dependencies",
        sa.Column("ticket_id", sa.String(length=36), nullable=False),
        sa.Column("depends_on_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["depends_on_id"],
            ["tickets.id"],
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
        ),
        sa.PrimaryKeyConstraint("ticket_id", "depends_on_id"),
    )
    op.create_index("ix_dependencies_parent", "ticket_dependencies", ["depends_on_id"], unique=False)


def downgrade() -> None:
    for table in (
        "ticket_dependencies",
        "claim_requests",
        "tickets",
        "projects",
        "outbox",
        "audit_events",
    ):
        op.drop_table(table)
