"""The quota schema. The Alembic migrations build exactly this."""

from __future__ import annotations

import sqlalchemy as sa

from swarmcommon.db import UTCDateTime

metadata = sa.MetaData()

VERSION_TABLE = "alembic_version_quota"

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("plan", sa.String(16), nullable=False),
    # JSON object {resource: limit}
    sa.Column("overrides", sa.Text, nullable=False),
    # The CreateTenant request that made it (its outcome is in quota_requests).
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(128), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("display_name", sa.String(200), nullable=False),
    # The public part of the key, used to find the row; never the secret.
    sa.Column("prefix", sa.String(32), nullable=False, unique=True),
    # HMAC-SHA256(pepper, secret), hex.
    sa.Column("secret_hash", sa.String(64), nullable=False),
    # The CreateApiKey request that made it (its outcome is in quota_requests).
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Index("ix_api_keys_tenant", "tenant_id", "created_at", "id"),
    sa.Index(
        "ux_api_keys_request",
        "tenant_id",
        "request_id",
        unique=True,
        sqlite_where=sa.text("request_id IS NOT NULL"),
        postgresql_where=sa.text("request_id IS NOT NULL"),
    ),
)

# One row per (tenant, resource, window): the admission check and the update
# of `used` are one INSERT ... ON CONFLICT DO UPDATE ... WHERE.
counters = sa.Table(
    "counters",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("resource", sa.String(32), primary_key=True),
    sa.Column("window_start", UTCDateTime, primary_key=True),
    sa.Column("used", sa.BigInteger, nullable=False),
)

reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("resource", sa.String(32), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("released_at", UTCDateTime, nullable=True),
    sa.Index(
        "ix_reservations_live",
        "tenant_id",
        "created_at",
        "id",
        sqlite_where=sa.text("released_at IS NULL"),
        postgresql_where=sa.text("released_at IS NULL"),
    ),
)

# Idempotency of every mutating call: what the first call with a (tenant,
# call, request_id) did, and a digest of its request. The tenant is "" for a
# CreateTenant that lets the service choose the id.
quota_requests = sa.Table(
    "quota_requests",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("operation", sa.String(16), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("response", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # NULL for rows written before 0002.
    sa.Column("fingerprint", sa.String(64), nullable=True),
)

# Secrets quota made for itself: in development mode only, the API-key
# pepper of this database (production takes it from SWARM_QUOTA_API_KEY_PEPPER).
dev_secrets = sa.Table(
    "dev_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
