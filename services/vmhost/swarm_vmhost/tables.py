"""The vmhost schema: agents (and their terminate requests), the address
pool, healing actions, the outbox. String columns hold the domain StrEnums'
values (swarm_vmhost.domain)."""

from __future__ import annotations

import sqlalchemy as sa

from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID, outbox_dead_letter_table, outbox_table

metadata = sa.MetaData()

VERSION_TABLE = "alembic_version_vmhost"

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("template", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("driver", sa.String(16), nullable=False),
    # AgentState: starting -> ready | busy -> failed | stopping -> terminated
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("address", sa.String(45), nullable=True),
    sa.Column("reservation_id", sa.String(64), nullable=True),
    sa.Column("ticket_id", sa.String(64), nullable=True),
    # Since when the heartbeats name ticket_id: how long an agent is on it.
    sa.Column("ticket_since", UTCDateTime, nullable=True),
    sa.Column("state_reason", sa.Text, nullable=True),
    sa.Column("replaces_agent_id", sa.String(36), nullable=True),
    # The driver's handle (pid, devices, namespace) as JSON.
    sa.Column("handle", sa.Text, nullable=True),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("last_heartbeat_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("terminated_at", UTCDateTime, nullable=True),
    # When vmhost knew the agent held no max_vms reservation any more (given
    # back, or none taken). A terminated agent without it still owes quota one.
    sa.Column("reservation_settled_at", UTCDateTime, nullable=True),
    sa.Index("ix_agents_tenant", "tenant_id", "created_at", "id"),
    sa.Index("ix_agents_state", "state"),
    # ListRevokedAgents: agents that left the live states recently.
    sa.Index("ix_agents_updated", "updated_at"),
    # The reconciler's look-ups: agents that may still hold a reservation
    # (live ones, and those whose release has not succeeded yet).
    sa.Index(
        "ix_agents_unsettled",
        "state",
        "updated_at",
        sqlite_where=sa.text("reservation_settled_at IS NULL"),
        postgresql_where=sa.text("reservation_settled_at IS NULL"),
    ),
    sa.Index(
        "ux_agents_request",
        "tenant_id",
        "request_id",
        unique=True,
        sqlite_where=sa.text("request_id IS NOT NULL"),
        postgresql_where=sa.text("request_id IS NOT NULL"),
    ),
)

# TerminateAgent's request ids (AIP-155): a retry finds its first request
# here and gets the same answer; another request with the same id is refused.
terminate_requests = sa.Table(
    "terminate_requests",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("agent_id", sa.String(36), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# IPAM: a row per address in use; the primary key is what makes two
# concurrent spawns unable to get the same address.
addresses = sa.Table(
    "addresses",
    metadata,
    sa.Column("address", sa.String(45), primary_key=True),
    sa.Column("agent_id", sa.String(36), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

healing_actions = sa.Table(
    "healing_actions",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("incident_id", sa.String(36), nullable=False),
    sa.Column("check_name", sa.String(32), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("agent_id", sa.String(36), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("ticket_ids", sa.Text, nullable=False),
    sa.Column("replacement_agent_id", sa.String(36), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_healing_tenant", "tenant_id", "seq"),
)

outbox = outbox_table(metadata)
outbox_dead_letters = outbox_dead_letter_table(metadata)

# Target pools (swarm_vmhost.pool): how many live agents of a role a tenant
# wants on this host, and the reconciler's bookkeeping.
agent_pool_targets = sa.Table(
    "agent_pool_targets",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(16), primary_key=True),
    sa.Column("target_count", sa.Integer, nullable=False),
    # The pool's spawns use request ids pool:<role>:<epoch>:<n>; a role
    # dropped and set again gets a new epoch, so it never replays old agents.
    sa.Column("epoch", sa.String(32), nullable=False),
    # Request ids 1..spawned of this epoch are spent (their rows exist or were dropped).
    sa.Column("spawned", sa.Integer, nullable=False),
    # Why the last pass fell short of the target ("" when it did not).
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("set_at", UTCDateTime, nullable=False),
)
