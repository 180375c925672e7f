"""Project snapshots and rollbacks (seed §10; rules in `swarm_ticketing.snapshots`),
on ticketing's one `metadata`."""

from __future__ import annotations

import sqlalchemy as sa

from swarm_ticketing.tables import metadata
from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID

# A commit of a project's base branch worth returning to.
project_snapshots = sa.Table(
    "project_snapshots",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=False),
    # pre_design, checkpoint, manual or pre_rollback (snapshots.SnapshotType).
    sa.Column("snapshot_type", sa.String(16), nullable=False),
    sa.Column("branch", sa.String(250), nullable=False),
    sa.Column("commit_sha", sa.String(64), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    # A checkpoint's number of merged merge requests of the project (NULL otherwise).
    sa.Column("merged_count", sa.Integer, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_project_snapshots_project", "tenant_id", "project_id", "created_at", "seq"),
    # One pre_design snapshot per project, however many callers take it at once.
    sa.Index(
        "ux_project_snapshots_pre_design",
        "project_id",
        unique=True,
        sqlite_where=sa.text("snapshot_type = 'pre_design'"),
        postgresql_where=sa.text("snapshot_type = 'pre_design'"),
    ),
)

# A rollback and its steps, each recorded when done: a crash midway resumes.
project_rollbacks = sa.Table(
    "project_rollbacks",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("snapshot_id", sa.String(36), sa.ForeignKey("project_snapshots.id"), nullable=False),
    sa.Column("branch", sa.String(250), nullable=False),
    sa.Column("target_commit", sa.String(64), nullable=False),
    # The head when it started (the force-push's lease) and its snapshot.
    sa.Column("expected_head", sa.String(64), nullable=False),
    sa.Column("pre_snapshot_id", sa.String(36), nullable=False),
    sa.Column("previous_head", sa.String(64), nullable=True),
    # running or done.
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    # JSON arrays of ids, written by their step.
    sa.Column("cancelled_ticket_ids", sa.Text, nullable=True),
    sa.Column("closed_merge_request_ids", sa.Text, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("fingerprint", sa.String(64), nullable=True),
    sa.Column("snapshot_taken_at", UTCDateTime, nullable=True),
    sa.Column("tickets_cancelled_at", UTCDateTime, nullable=True),
    sa.Column("merge_requests_closed_at", UTCDateTime, nullable=True),
    sa.Column("branch_reset_at", UTCDateTime, nullable=True),
    sa.Column("audited_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_project_rollbacks_project", "tenant_id", "project_id", "state"),
    sa.Index(
        "ux_project_rollbacks_request",
        "tenant_id",
        "request_id",
        unique=True,
        sqlite_where=sa.text("request_id IS NOT NULL"),
        postgresql_where=sa.text("request_id IS NOT NULL"),
    ),
)

# The audit trail of project-level actions (the seed's `events` row with a
# NULL ticket: audit_events is per ticket), e.g. project_rollback.
project_audit_events = sa.Table(
    "project_audit_events",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("project_id", sa.String(36), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("actor_type", sa.String(16), nullable=False),
    sa.Column("actor_id", sa.String(128), nullable=True),
    # The seed's metadata, a JSON object (project_rollback: project_id, snapshot_id, commit_sha).
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("rationale", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_project_audit_project", "tenant_id", "project_id", "seq"),
)
