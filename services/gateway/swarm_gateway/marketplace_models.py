"""REST resources of the template marketplace (seed §14)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from swarm.ticketing.v1 import marketplace_pb2 as mpb
from swarm_gateway.models import Request, Role, Text, ts
from swarm_gateway.template_models import Slug

Category = Literal["security", "testing", "documentation", "review", "domain", "devops"]
Visibility = Literal["private", "public", "unlisted"]
PricingModel = Literal["free", "one_time", "per_use", "subscription"]
SortOrder = Literal["rating", "installs", "recent"]
TAG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
Tag = Annotated[str, Field(pattern=TAG_PATTERN, description="1-32 lowercase letters, digits and dashes")]
Micros = Annotated[
    int,
    Field(
        ge=0,
        le=10_000_000_000,
        description=(
            "Micro-dollars (1 USD = 1,000,000), whole cents: per_use 10000..1000000, "
            "one_time and subscription 10000..10^10, free 0"
        ),
    ),
]


class ListingWrite(Request):
    """The fields an author states (PUT replaces them all)."""

    name: Text = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=4000)
    category: Category
    tags: list[Tag] = Field(default_factory=list, max_length=10)
    visibility: Visibility = "private"
    pricing_model: PricingModel = "free"
    price_usd_micros: Micros = 0
    config_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description="The JSON Schema an installation's config must match",
    )

    def fields_proto(self) -> mpb.ListingFields:
        return mpb.ListingFields(
            name=self.name,
            description=self.description,
            category=self.category,
            tags=self.tags,
            visibility=self.visibility,
            pricing_model=self.pricing_model,
            price_usd_micros=self.price_usd_micros,
            config_schema_json=json.dumps(self.config_schema),
        )


class VersionFields(Request):
    prompt: Text = Field(min_length=1, max_length=64 * 1024, description="The stage's system prompt")
    model: Text = Field(default="", max_length=128, description="Empty: the agent's configured model")
    parameters: dict[str, Any] = Field(default_factory=dict, description="e.g. max_tokens, temperature")
    tools: dict[str, Any] = Field(default_factory=dict, description="Tool settings")

    def version_proto(self) -> mpb.ListingVersion:
        return mpb.ListingVersion(
            prompt=self.prompt,
            model=self.model,
            parameters_json=json.dumps(self.parameters),
            tools_json=json.dumps(self.tools),
        )


class ListingCreate(ListingWrite, VersionFields):
    slug: Slug
    agent_type: Role


class ListingUpdate(ListingWrite):
    version: VersionFields | None = Field(default=None, description="Publish this as the next version")


class InstallRequest(Request):
    config: dict[str, Any] = Field(
        default_factory=dict, description="Valid against the listing's config_schema"
    )


class ReviewCreate(Request):
    rating: int = Field(ge=1, le=5)
    title: Text = Field(default="", max_length=200)
    body: Text = Field(default="", max_length=4000)


class ListingPublic(BaseModel):
    id: str
    slug: str
    agent_type: str
    name: str
    description: str
    category: str
    tags: list[str]
    visibility: str
    pricing_model: str
    price_usd_micros: int
    config_schema: dict[str, Any]
    version: int
    install_count: int
    rating_count: int
    rating_average: float
    is_author: bool
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_proto(cls, x: mpb.MarketplaceListing) -> ListingPublic:
        return cls(
            id=x.id,
            slug=x.slug,
            agent_type=x.agent_type,
            name=x.name,
            description=x.description,
            category=x.category,
            tags=list(x.tags),
            visibility=x.visibility,
            pricing_model=x.pricing_model,
            price_usd_micros=x.price_usd_micros,
            config_schema=json.loads(x.config_schema_json or "{}"),
            version=x.version,
            install_count=x.install_count,
            rating_count=x.rating_count,
            rating_average=x.rating_average,
            is_author=x.is_author,
            created_at=ts(x.create_time, x.HasField("create_time")),
            updated_at=ts(x.update_time, x.HasField("update_time")),
        )


class ListingPage(BaseModel):
    items: list[ListingPublic]
    next_page_token: str


class InstallationPublic(BaseModel):
    id: str
    listing_id: str
    slug: str
    version: int
    config: dict[str, Any]
    created_at: datetime | None

    @classmethod
    def from_proto(cls, i: mpb.MarketplaceInstallation) -> InstallationPublic:
        return cls(
            id=i.id,
            listing_id=i.listing_id,
            slug=i.slug,
            version=i.version,
            config=json.loads(i.config_json or "{}"),
            created_at=ts(i.create_time, i.HasField("create_time")),
        )


class ChargePublic(BaseModel):
    id: str
    kind: str
    price_usd_micros: int
    platform_usd_micros: int
    author_usd_micros: int

    @classmethod
    def from_proto(cls, e: mpb.MarketplaceLedgerEntry) -> ChargePublic:
        return cls(
            id=e.id,
            kind=e.kind,
            price_usd_micros=e.price_usd_micros,
            platform_usd_micros=e.platform_usd_micros,
            author_usd_micros=e.author_usd_micros,
        )


class InstallationCreated(BaseModel):
    installation: InstallationPublic
    charge: ChargePublic | None


class ListingDetail(BaseModel):
    listing: ListingPublic
    installation: InstallationPublic | None
    # The latest version's prompt: its author's and buyers' alone (null for anyone else).
    prompt: str | None
    model: str


class ReviewPublic(BaseModel):
    id: str
    listing_id: str
    rating: int
    title: str
    body: str
    created_at: datetime | None

    @classmethod
    def from_proto(cls, r: mpb.MarketplaceReview) -> ReviewPublic:
        return cls(
            id=r.id,
            listing_id=r.listing_id,
            rating=r.rating,
            title=r.title,
            body=r.body,
            created_at=ts(r.create_time, r.HasField("create_time")),
        )


class ReviewCreated(BaseModel):
    review: ReviewPublic
    listing: ListingPublic
