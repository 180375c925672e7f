"""Agent templates, their immutable versions, deployments with canary
rollout, every deployment change, stage outcomes per version, and the
version each lease was given.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_templates",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("slug", sa.String(64), nullable=False, unique=True),
        sa.Column("agent_type", sa.String(16), nullable=False),
        sa.Column("owner_tenant_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "agent_template_versions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("template_id", sa.String(36), sa.ForeignKey("agent_templates.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("tools", sa.Text(), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("template_id", "version", name="ux_template_versions_number"),
    )
    op.create_table(
        "template_deployments",
        sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("agent_type", sa.String(16), nullable=False),
        sa.Column("version_id", sa.String(36), sa.ForeignKey("agent_template_versions.id"), nullable=False),
        sa.Column(
            "stable_version_id", sa.String(36), sa.ForeignKey("agent_template_versions.id"), nullable=True
        ),
        sa.Column("rollout_percent", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ladder", sa.String(64), nullable=False),
        sa.Column("success_count", sa.Integer(), nullable=False),
        sa.Column("failure_count", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("promoted_at", UTCDateTime(), nullable=True),
    )
    op.create_index(
        "ix_template_deployments_scope", "template_deployments", ["tenant_id", "agent_type", "seq"]
    )
    op.create_table(
        "template_deployment_changes",
        sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("deployment_id", sa.String(36), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_template_changes_deployment", "template_deployment_changes", ["deployment_id", "seq"])
    op.create_table(
        "template_outcomes",
        sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("version_id", sa.String(36), nullable=False),
        sa.Column("deployment_id", sa.String(36), nullable=True),
        sa.Column("cause", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_template_outcomes_version", "template_outcomes", ["version_id", "seq"])
    op.create_table(
        "stage_templates",
        sa.Column("claim_token", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("version_id", sa.String(36), nullable=False),
        sa.Column("deployment_id", sa.String(36), nullable=False),
        sa.Column("canary", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_stage_templates_ticket", "stage_templates", ["ticket_id", "stage", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_stage_templates_ticket", table_name="stage_templates")
    op.drop_table("stage_templates")
    op.drop_index("ix_template_outcomes_version", table_name="template_outcomes")
    op.drop_table("template_outcomes")
    op.drop_index("ix_template_changes_deployment", table_name="template_deployment_changes")
    op.drop_table("template_deployment_changes")
    op.drop_index("ix_template_deployments_scope", table_name="template_deployments")
    op.drop_table("template_deployments")
    op.drop_table("agent_template_versions")
    op.drop_table("agent_templates")
