"""The template marketplace's tables (seed §14; rules in
`swarm_ticketing.marketplace`), on ticketing's one `metadata`."""

from __future__ import annotations

import sqlalchemy as sa

from swarm_ticketing.tables import metadata
from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID

# A published agent template. Each listing owns its template (made with it):
# every version of that template is a marketplace version.
marketplace_listings = sa.Table(
    "marketplace_listings",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("slug", sa.String(64), nullable=False, unique=True),
    sa.Column("template_id", sa.String(36), sa.ForeignKey("agent_templates.id"), nullable=False, unique=True),
    sa.Column("author_tenant_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("category", sa.String(16), nullable=False),
    # A JSON array of lowercase tags, e.g. ["owasp","python"] (searched with LIKE '%"tag"%').
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("visibility", sa.String(16), nullable=False),
    sa.Column("pricing_model", sa.String(16), nullable=False),
    sa.Column("price_usd_micros", sa.BigInteger, nullable=False),
    # The JSON Schema an installation's configuration must match.
    sa.Column("config_schema", sa.Text, nullable=False),
    # The latest published version number of the template.
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("install_count", sa.Integer, nullable=False),
    sa.Column("rating_sum", sa.Integer, nullable=False),
    sa.Column("rating_count", sa.Integer, nullable=False),
    # The average rating x 1000, floored: the sort key of "sort by rating".
    sa.Column("rating_milli", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_marketplace_listings_rating", "visibility", "rating_milli", "id"),
    sa.Index("ix_marketplace_listings_installs", "visibility", "install_count", "id"),
    sa.Index("ix_marketplace_listings_recent", "visibility", "created_at", "id"),
)

# Every version a listing published; a paid one's prompt is here, sealed
# (agent_template_versions.prompt then holds a placeholder).
marketplace_versions = sa.Table(
    "marketplace_versions",
    metadata,
    sa.Column("version_id", sa.String(36), sa.ForeignKey("agent_template_versions.id"), primary_key=True),
    sa.Column("listing_id", sa.String(36), sa.ForeignKey("marketplace_listings.id"), nullable=False),
    sa.Column("sealed_prompt", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_marketplace_versions_listing", "listing_id"),
)

# One per tenant and listing: the tenant may deploy the listing's template.
marketplace_installations = sa.Table(
    "marketplace_installations",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("listing_id", sa.String(36), sa.ForeignKey("marketplace_listings.id"), nullable=False),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    # The JSON object the installer configured, valid against the schema at install.
    sa.Column("config", sa.Text, nullable=False),
    # The ledger entry that bought it (one-time or subscription); NULL: free or per-use.
    sa.Column("purchase_id", sa.String(36), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("listing_id", "tenant_id", name="ux_marketplace_installations_tenant"),
    sa.Index("ix_marketplace_installations_tenant", "tenant_id"),
)

marketplace_reviews = sa.Table(
    "marketplace_reviews",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("listing_id", sa.String(36), sa.ForeignKey("marketplace_listings.id"), nullable=False),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("rating", sa.Integer, nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("listing_id", "tenant_id", name="ux_marketplace_reviews_tenant"),
)

# Money: purchases, subscription periods and per-use charges, each split
# between the platform and the author (the two shares sum to the price).
marketplace_ledger = sa.Table(
    "marketplace_ledger",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("listing_id", sa.String(36), sa.ForeignKey("marketplace_listings.id"), nullable=False),
    sa.Column("buyer_tenant_id", sa.String(128), nullable=False),
    sa.Column("author_tenant_id", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("price_usd_micros", sa.BigInteger, nullable=False),
    sa.Column("platform_usd_micros", sa.BigInteger, nullable=False),
    sa.Column("author_usd_micros", sa.BigInteger, nullable=False),
    # Per-use charges: the version run and the claim that ran it (one charge per claim).
    sa.Column("version_id", sa.String(36), nullable=True),
    sa.Column("ticket_id", sa.String(36), nullable=True),
    sa.Column("claim_token", sa.String(36), nullable=True, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_marketplace_ledger_buyer", "buyer_tenant_id", "listing_id", "seq"),
    sa.Index("ix_marketplace_ledger_author", "author_tenant_id", "seq"),
)
