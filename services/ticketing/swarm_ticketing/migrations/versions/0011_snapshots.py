"""Project snapshots and rollbacks, and the project-level audit trail.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "project_snapshots",
        sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("snapshot_type", sa.String(16), nullable=False),
        sa.Column("branch", sa.String(250), nullable=False),
        sa.Column("commit_sha", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("merged_count", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_project_snapshots_project", "project_snapshots", ["tenant_id", "project_id", "created_at", "seq"]
    )
    op.create_index(
        "ux_project_snapshots_pre_design",
        "project_snapshots",
        ["project_id"],
        unique=True,
        sqlite_where=sa.text("snapshot_type = 'pre_design'"),
        postgresql_where=sa.text("snapshot_type = 'pre_design'"),
    )
    op.create_table(
        "project_rollbacks",
        sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("snapshot_id", sa.String(36), sa.ForeignKey("project_snapshots.id"), nullable=False),
        sa.Column("branch", sa.String(250), nullable=False),
        sa.Column("target_commit", sa.String(64), nullable=False),
        sa.Column("expected_head", sa.String(64), nullable=False),
        sa.Column("pre_snapshot_id", sa.String(36), nullable=False),
        sa.Column("previous_head", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("cancelled_ticket_ids", sa.Text(), nullable=True),
        sa.Column("closed_merge_request_ids", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("snapshot_taken_at", UTCDateTime(), nullable=True),
        sa.Column("tickets_cancelled_at", UTCDateTime(), nullable=True),
        sa.Column("merge_requests_closed_at", UTCDateTime(), nullable=True),
        sa.Column("branch_reset_at", UTCDateTime(), nullable=True),
        sa.Column("audited_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_project_rollbacks_project", "project_rollbacks", ["tenant_id", "project_id", "state"])
    op.create_index(
        "ux_project_rollbacks_request",
        "project_rollbacks",
        ["tenant_id", "request_id"],
        unique=True,
        sqlite_where=sa.text("request_id IS NOT NULL"),
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )
    op.create_table(
        "project_audit_events",
        sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("project_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(128), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_project_audit_project", "project_audit_events", ["tenant_id", "project_id", "seq"])


def downgrade() -> None:
    op.drop_table("project_audit_events")
    op.drop_table("project_rollbacks")
    op.drop_table("project_snapshots")
