"""The ticketing schema. The Alembic migrations build exactly this (a test
compares them on both backends)."""

from __future__ import annotations

import sqlalchemy as sa

from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID, outbox_dead_letter_table, outbox_table

metadata = sa.MetaData()

VERSION_TABLE = "alembic_version_ticketing"

_LEASED = "state IN ('assigned', 'in_progress')"

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("ticket_count", sa.Integer, nullable=False),
    sa.Column("repository", sa.String(2048), nullable=False, server_default=""),
    sa.Column("base_branch", sa.String(250), nullable=False, server_default="main"),
    # The LLM cost cap (micro-dollars) of its tickets that set none; NULL: the tenant's.
    sa.Column("ticket_cost_cap_usd_micros", sa.BigInteger, nullable=True),
    # The collaboration pattern of its tickets that named none (domain.CollaborationPattern).
    sa.Column("pattern", sa.String(16), nullable=False, server_default="custom"),
    # The CreateProject request that made it (its outcome is in request_log).
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_projects_tenant_created", "tenant_id", "created_at", "id"),
    sa.Index(
        "ux_projects_request",
        "tenant_id",
        "request_id",
        unique=True,
        sqlite_where=sa.text("request_id IS NOT NULL"),
        postgresql_where=sa.text("request_id IS NOT NULL"),
    ),
)

tickets = sa.Table(
    "tickets",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=False),
    # Position in the project as submitted: the tie-break after created_at.
    sa.Column("ordinal", sa.Integer, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    # Comma-separated roles, e.g. "coder,reviewer"; `role` is the current one.
    sa.Column("stages", sa.String(200), nullable=False),
    sa.Column("stage_index", sa.Integer, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    # Parents not yet done; the ticket becomes ready when this reaches 0.
    sa.Column("pending_parents", sa.Integer, nullable=False),
    # Immutable after creation, kept on the row so reads need no join:
    # comma-separated parent ids, and how many tickets depend on this one.
    sa.Column("parent_ids", sa.Text, nullable=False),
    sa.Column("child_count", sa.Integer, nullable=False),
    sa.Column("failure_count", sa.Integer, nullable=False),
    sa.Column("last_failure_at", UTCDateTime, nullable=True),
    sa.Column("last_failure_reason", sa.Text, nullable=True),
    sa.Column("quarantined_at", UTCDateTime, nullable=True),
    sa.Column("quarantine_reason", sa.Text, nullable=True),
    # Why it is quarantined: a QuarantineCause value (NULL before 0007: failures).
    sa.Column("quarantine_cause", sa.String(32), nullable=True),
    # The ticket's own LLM cost cap (micro-dollars); NULL: its project's.
    sa.Column("cost_cap_usd_micros", sa.BigInteger, nullable=True),
    sa.Column("claim_token", sa.String(36), nullable=True),
    sa.Column("claim_expires_at", UTCDateTime, nullable=True),
    sa.Column("claimed_by_agent_id", sa.String(128), nullable=True),
    sa.Column("claimed_at", UTCDateTime, nullable=True),
    # The lease's work: the steps its heartbeats reported, and when the count
    # last rose (NULL: not since the claim). No rise for the stale deadline: released.
    sa.Column("lease_progress", sa.BigInteger, nullable=True),
    sa.Column("progressed_at", UTCDateTime, nullable=True),
    # Token of the lease whose SubmitWork last succeeded: a retried submit
    # with it is answered with success instead of a stale-token error.
    sa.Column("last_submitted_token", sa.String(36), nullable=True),
    sa.Column("result_json", sa.Text, nullable=True),
    # W3C trace context of the request that created the ticket: agents get it
    # with their lease, so everything done for the ticket is one trace.
    sa.Column("traceparent", sa.String(64), nullable=True),
    # Copied from the project (immutable there): a claim needs no join.
    sa.Column("repository", sa.String(2048), nullable=False, server_default=""),
    sa.Column("base_branch", sa.String(250), nullable=False, server_default="main"),
    sa.Column("pattern", sa.String(16), nullable=False, server_default="custom"),
    # An ensemble's coder attempt: the ensemble ticket it works for, and its
    # number (1..N); NULL and 0 for every other ticket.
    sa.Column("ensemble_of", sa.String(36), nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    # Its estimate when it was created (estimation.py; NULL before 0012), and
    # the minutes its leases were held once it is done.
    sa.Column("complexity_score", sa.Integer, nullable=True),
    sa.Column("estimate_optimistic", sa.Integer, nullable=True),
    sa.Column("estimate_expected", sa.Integer, nullable=True),
    sa.Column("estimate_pessimistic", sa.Integer, nullable=True),
    sa.Column("estimate_confidence", sa.String(8), nullable=True),
    sa.Column("actual_minutes", sa.Float, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The claim path: only ready rows, already in claim order.
    sa.Index(
        "ix_tickets_claimable",
        "tenant_id",
        sa.text("priority DESC"),
        "created_at",
        "ordinal",
        sqlite_where=sa.text("state = 'ready'"),
        postgresql_where=sa.text("state = 'ready'"),
    ),
    # Expired-lease rescue and the reaper: only leased rows.
    sa.Index(
        "ix_tickets_leased",
        "tenant_id",
        "claim_expires_at",
        sqlite_where=sa.text(_LEASED),
        postgresql_where=sa.text(_LEASED),
    ),
    sa.Index(
        "ix_tickets_lease_expiry",
        "claim_expires_at",
        sqlite_where=sa.text(_LEASED),
        postgresql_where=sa.text(_LEASED),
    ),
    sa.Index(
        "ix_tickets_agent",
        "tenant_id",
        "claimed_by_agent_id",
        sqlite_where=sa.text(_LEASED),
        postgresql_where=sa.text(_LEASED),
    ),
    sa.Index(
        "ix_tickets_quarantined",
        "tenant_id",
        "quarantined_at",
        "id",
        sqlite_where=sa.text("state = 'quarantined'"),
        postgresql_where=sa.text("state = 'quarantined'"),
    ),
    sa.Index("ix_tickets_listing", "tenant_id", "created_at", "ordinal", "id"),
    sa.Index("ix_tickets_project", "project_id", "state"),
    # The tenant's history for estimates.
    sa.Index(
        "ix_tickets_actuals",
        "tenant_id",
        "type",
        "complexity_score",
        sqlite_where=sa.text("actual_minutes IS NOT NULL"),
        postgresql_where=sa.text("actual_minutes IS NOT NULL"),
    ),
    sa.Index(
        "ix_tickets_ensemble",
        "ensemble_of",
        sqlite_where=sa.text("ensemble_of IS NOT NULL"),
        postgresql_where=sa.text("ensemble_of IS NOT NULL"),
    ),
)

ticket_dependencies = sa.Table(
    "ticket_dependencies",
    metadata,
    sa.Column("ticket_id", sa.String(36), sa.ForeignKey("tickets.id"), primary_key=True),
    sa.Column("depends_on_id", sa.String(36), sa.ForeignKey("tickets.id"), primary_key=True),
    sa.Index("ix_dependencies_parent", "depends_on_id"),
)

# Idempotency of ClaimTicket: (tenant, agent, request_id) -> the lease granted.
claim_requests = sa.Table(
    "claim_requests",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("agent_id", sa.String(128), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("ticket_id", sa.String(36), sa.ForeignKey("tickets.id"), nullable=False),
    sa.Column("claim_token", sa.String(36), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # Digest of the claim request (role, project, lease); NULL before 0006.
    sa.Column("fingerprint", sa.String(64), nullable=True),
    sa.Index("ix_claim_requests_created", "created_at"),
)

# Idempotency of every other mutating call: the outcome of the first call
# with a (tenant, call, request_id), and a digest of its request.
request_log = sa.Table(
    "request_log",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("operation", sa.String(32), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_request_log_created", "created_at"),
)

# The audit trail: the seed's `events` table shape, one row per transition.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("ticket_id", sa.String(36), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("actor_type", sa.String(16), nullable=False),
    sa.Column("actor_id", sa.String(128), nullable=True),
    sa.Column("old_value", sa.Text, nullable=True),
    sa.Column("new_value", sa.Text, nullable=True),
    sa.Column("rationale", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_audit_ticket", "tenant_id", "ticket_id", "seq"),
)

# A branch on its way into the base branch (pr.opened / pr.merged / pr.rejected).
merge_requests = sa.Table(
    "merge_requests",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("project_id", sa.String(36), nullable=False),
    sa.Column("ticket_id", sa.String(36), nullable=False),
    sa.Column("branch", sa.String(250), nullable=False),
    sa.Column("commit_sha", sa.String(64), nullable=False),
    # open -> merged | rejected; a rework reopens it with the new commit.
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("merge_commit", sa.String(64), nullable=True),
    sa.Column("review_comments", sa.Text, nullable=True),
    sa.Column("author_agent_id", sa.String(128), nullable=True),
    sa.Column("reviewer_agent_id", sa.String(128), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("ticket_id", "branch", name="ux_merge_requests_ticket_branch"),
    sa.Index("ix_merge_requests_tenant", "tenant_id", "seq"),
)

outbox = outbox_table(metadata)
outbox_dead_letters = outbox_dead_letter_table(metadata)

# -- agent templates and their rollout (swarm_ticketing.templates) -----------------------------

# A named, typed agent; owner_tenant_id "" is the platform's.
agent_templates = sa.Table(
    "agent_templates",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("slug", sa.String(64), nullable=False, unique=True),
    sa.Column("agent_type", sa.String(16), nullable=False),
    sa.Column("owner_tenant_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Immutable once written: what an agent of that version is told and runs with.
agent_template_versions = sa.Table(
    "agent_template_versions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("template_id", sa.String(36), sa.ForeignKey("agent_templates.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    # JSON objects: model parameters (temperature, max_tokens, …) and tool settings.
    sa.Column("parameters", sa.Text, nullable=False),
    sa.Column("tools", sa.Text, nullable=False),
    sa.Column("author", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("template_id", "version", name="ux_template_versions_number"),
)

# One version rolled out to every tenant (tenant_id "") or one tenant.
template_deployments = sa.Table(
    "template_deployments",
    metadata,
    # Order of creation: the newest deployment of a scope and type is in force.
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("agent_type", sa.String(16), nullable=False),
    sa.Column("version_id", sa.String(36), sa.ForeignKey("agent_template_versions.id"), nullable=False),
    # What the tickets outside the rollout get; NULL only for a deployment born full.
    sa.Column("stable_version_id", sa.String(36), sa.ForeignKey("agent_template_versions.id"), nullable=True),
    sa.Column("rollout_percent", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    # Comma-separated percentages, e.g. "5,25,50,100".
    sa.Column("ladder", sa.String(64), nullable=False),
    sa.Column("success_count", sa.Integer, nullable=False),
    sa.Column("failure_count", sa.Integer, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("promoted_at", UTCDateTime, nullable=True),
    sa.Index("ix_template_deployments_scope", "tenant_id", "agent_type", "seq"),
)

# Every change of a deployment (created, promoted, rolled back, paused), and why.
template_deployment_changes = sa.Table(
    "template_deployment_changes",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("deployment_id", sa.String(36), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("old_value", sa.Text, nullable=True),
    sa.Column("new_value", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_template_changes_deployment", "deployment_id", "seq"),
)

# Each stage outcome, against the version that produced it.
template_outcomes = sa.Table(
    "template_outcomes",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("ticket_id", sa.String(36), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("version_id", sa.String(36), nullable=False),
    # The deployment whose counters it moved (NULL: the stable version's work).
    sa.Column("deployment_id", sa.String(36), nullable=True),
    sa.Column("cause", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_template_outcomes_version", "version_id", "seq"),
)

# The version each lease was given (by its claim token): its outcome is counted
# against it, and a replayed claim answers with it again.
stage_templates = sa.Table(
    "stage_templates",
    metadata,
    sa.Column("claim_token", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("ticket_id", sa.String(36), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("version_id", sa.String(36), nullable=False),
    sa.Column("deployment_id", sa.String(36), nullable=False),
    sa.Column("canary", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_stage_templates_ticket", "ticket_id", "stage", "created_at"),
)

# The marketplace's tables are defined in `marketplace_tables` (this module
# is at its size limit) on this `metadata`; importing it here registers them
# for every user of this module (migrations, snapshots).
import swarm_ticketing.learning_tables  # noqa: E402, F401
import swarm_ticketing.marketplace_tables  # noqa: E402, F401
import swarm_ticketing.snapshot_tables  # noqa: E402, F401
