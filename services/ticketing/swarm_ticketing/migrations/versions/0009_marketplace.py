"""The template marketplace: listings, their published versions (paid
prompts sealed), installations, reviews and the revenue ledger.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from swarmcommon.db import UTCDateTime
from swarmcommon.outbox import AUTO_ID

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "marketplace_listings",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("slug", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "template_id", sa.String(36), sa.ForeignKey("agent_templates.id"), nullable=False, unique=True
        ),
        sa.Column("author_tenant_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("pricing_model", sa.String(16), nullable=False),
        sa.Column("price_usd_micros", sa.BigInteger(), nullable=False),
        sa.Column("config_schema", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("install_count", sa.Integer(), nullable=False),
        sa.Column("rating_sum", sa.Integer(), nullable=False),
        sa.Column("rating_count", sa.Integer(), nullable=False),
        sa.Column("rating_milli", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    for name, column in (("rating", "rating_milli"), ("installs", "install_count"), ("recent", "created_at")):
        op.create_index(
            f"ix_marketplace_listings_{name}", "marketplace_listings", ["visibility", column, "id"]
        )
    op.create_table(
        "marketplace_versions",
        sa.Column("version_id", sa.String(36), sa.ForeignKey("agent_template_versions.id"), primary_key=True),
        sa.Column("listing_id", sa.String(36), sa.ForeignKey("marketplace_listings.id"), nullable=False),
        sa.Column("sealed_prompt", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_marketplace_versions_listing", "marketplace_versions", ["listing_id"])
    op.create_table(
        "marketplace_installations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("listing_id", sa.String(36), sa.ForeignKey("marketplace_listings.id"), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("purchase_id", sa.String(36), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("listing_id", "tenant_id", name="ux_marketplace_installations_tenant"),
    )
    op.create_index("ix_marketplace_installations_tenant", "marketplace_installations", ["tenant_id"])
    op.create_table(
        "marketplace_reviews",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("listing_id", sa.String(36), sa.ForeignKey("marketplace_listings.id"), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("listing_id", "tenant_id", name="ux_marketplace_reviews_tenant"),
    )
    op.create_table(
        "marketplace_ledger",
        sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("listing_id", sa.String(36), sa.ForeignKey("marketplace_listings.id"), nullable=False),
        sa.Column("buyer_tenant_id", sa.String(128), nullable=False),
        sa.Column("author_tenant_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("price_usd_micros", sa.BigInteger(), nullable=False),
        sa.Column("platform_usd_micros", sa.BigInteger(), nullable=False),
        sa.Column("author_usd_micros", sa.BigInteger(), nullable=False),
        sa.Column("version_id", sa.String(36), nullable=True),
        sa.Column("ticket_id", sa.String(36), nullable=True),
        sa.Column("claim_token", sa.String(36), nullable=True, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_marketplace_ledger_buyer", "marketplace_ledger", ["buyer_tenant_id", "listing_id", "seq"]
    )
    op.create_index("ix_marketplace_ledger_author", "marketplace_ledger", ["author_tenant_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_marketplace_ledger_author", table_name="marketplace_ledger")
    op.drop_index("ix_marketplace_ledger_buyer", table_name="marketplace_ledger")
    op.drop_table("marketplace_ledger")
    op.drop_table("marketplace_reviews")
    op.drop_index("ix_marketplace_installations_tenant", table_name="marketplace_installations")
    op.drop_table("marketplace_installations")
    op.drop_index("ix_marketplace_versions_listing", table_name="marketplace_versions")
    op.drop_table("marketplace_versions")
    for name in ("recent", "installs", "rating"):
        op.drop_index(f"ix_marketplace_listings_{name}", table_name="marketplace_listings")
    op.drop_table("marketplace_listings")
