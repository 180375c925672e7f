"""Learnings and codebase conventions (seed §13), with full-text search over
learnings: an FTS5 table kept in step by triggers on SQLite, a GIN index on
`to_tsvector('english', content)` on PostgreSQL. (A later batch_alter_table
on `learnings` recreates it on SQLite and drops the triggers: recreate them.)

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SQLITE_FTS = (
    "CREATE VIRTUAL TABLE learnings_fts USING fts5("
    "content, content='learnings', content_rowid='seq', tokenize='porter unicode61')",
    "CREATE TRIGGER learnings_fts_insert AFTER INSERT ON learnings BEGIN "
    "INSERT INTO learnings_fts(rowid, content) VALUES (new.seq, new.content); END",
    "CREATE TRIGGER learnings_fts_delete AFTER DELETE ON learnings BEGIN "
    "INSERT INTO learnings_fts(learnings_fts, rowid, content) VALUES ('delete', old.seq, old.content); END",
    "CREATE TRIGGER learnings_fts_update AFTER UPDATE OF content ON learnings BEGIN "
    "INSERT INTO learnings_fts(learnings_fts, rowid, content) VALUES ('delete', old.seq, old.content); "
    "INSERT INTO learnings_fts(rowid, content) VALUES (new.seq, new.content); END",
)
POSTGRES_FTS = "CREATE INDEX ix_learnings_fts ON learnings USING gin (to_tsvector('english', content))"


def upgrade() -> None:
    op.create_table(
        "learnings",
        sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("context_hash", sa.String(64), nullable=False),
        sa.Column("ticket_id", sa.String(36), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_learnings_project", "learnings", ["tenant_id", "project_id", "updated_at", "seq"])
    op.create_index(
        "ux_learnings_hash",
        "learnings",
        ["tenant_id", "project_id", "context_hash"],
        unique=True,
        sqlite_where=sa.text("project_id IS NOT NULL"),
        postgresql_where=sa.text("project_id IS NOT NULL"),
    )
    op.create_index(
        "ux_learnings_tenant_hash",
        "learnings",
        ["tenant_id", "context_hash"],
        unique=True,
        sqlite_where=sa.text("project_id IS NULL"),
        postgresql_where=sa.text("project_id IS NULL"),
    )
    op.create_table(
        "learning_uses",
        sa.Column("claim_token", sa.String(36), primary_key=True),
        sa.Column("learning_id", sa.String(36), sa.ForeignKey("learnings.id"), primary_key=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_learning_uses_learning", "learning_uses", ["learning_id"])
    op.create_table(
        "conventions",
        sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_conventions_project", "conventions", ["tenant_id", "project_id", "seq"])
    op.create_table(
        "convention_scans",
        sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("commit_sha", sa.String(64), nullable=True),
        sa.Column("scanned_at", UTCDateTime(), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FTS)
    else:
        for statement in SQLITE_FTS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TABLE learnings_fts")  # its triggers go with `learnings`
    op.drop_table("convention_scans")
    op.drop_table("conventions")
    op.drop_table("learning_uses")
    op.drop_table("learnings")
