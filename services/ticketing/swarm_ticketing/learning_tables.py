"""Learnings and codebase conventions (seed §13; rules in `swarm_ticketing.learning`),
on ticketing's one `metadata`.

The full-text search over `learnings.content` is built by the migration and
not modelled here: on SQLite an FTS5 table `learnings_fts` (external
content, rowid = `learnings.seq`) kept in step by triggers; on PostgreSQL a
GIN index `ix_learnings_fts` on `to_tsvector('english', content)`.
"""

from __future__ import annotations

import sqlalchemy as sa

from swarm_ticketing.tables import metadata
from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID

# What a ticket's history taught, per project (project_id NULL: tenant-wide).
learnings = sa.Table(
    "learnings",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=True),
    # success, failure or optimization (learning.LearningKind).
    sa.Column("kind", sa.String(16), nullable=False),
    # failure, review, security or judge (learning.LearningSource).
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    # sha256 of the kind and the normalised content: one row per lesson.
    sa.Column("context_hash", sa.String(64), nullable=False),
    # The ticket it was last seen on.
    sa.Column("ticket_id", sa.String(36), nullable=True),
    sa.Column("uses", sa.Integer, nullable=False),
    sa.Column("successes", sa.Integer, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_learnings_project", "tenant_id", "project_id", "updated_at", "seq"),
    sa.Index(
        "ux_learnings_hash",
        "tenant_id",
        "project_id",
        "context_hash",
        unique=True,
        sqlite_where=sa.text("project_id IS NOT NULL"),
        postgresql_where=sa.text("project_id IS NOT NULL"),
    ),
    sa.Index(
        "ux_learnings_tenant_hash",
        "tenant_id",
        "context_hash",
        unique=True,
        sqlite_where=sa.text("project_id IS NULL"),
        postgresql_where=sa.text("project_id IS NULL"),
    ),
)

# Which learnings a lease was given (GetLessons), credited with the stage's
# outcome once (`outcome` set) when that lease submits or reports a failure.
learning_uses = sa.Table(
    "learning_uses",
    metadata,
    sa.Column("claim_token", sa.String(36), primary_key=True),
    sa.Column("learning_id", sa.String(36), sa.ForeignKey("learnings.id"), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("ticket_id", sa.String(36), nullable=False),
    # NULL until the stage ends: success or failure.
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_learning_uses_learning", "learning_id"),
)

# A tenant's (explicit) or a repository's (inferred) ways of doing things.
conventions = sa.Table(
    "conventions",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=True),
    # explicit or inferred (learning.ConventionOrigin).
    sa.Column("origin", sa.String(16), nullable=False),
    sa.Column("category", sa.String(32), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_conventions_project", "tenant_id", "project_id", "seq"),
)

# Projects whose repository was read for conventions (once, at the first
# GetLessons: reading git has no place in the project's creation transaction).
convention_scans = sa.Table(
    "convention_scans",
    metadata,
    sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("commit_sha", sa.String(64), nullable=True),
    sa.Column("scanned_at", UTCDateTime, nullable=False),
)
