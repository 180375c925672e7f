"""gRPC adapter for the template marketplace (MarketplaceService): proto in ->
checked fields -> store call -> proto out. Every call acts for one tenant
(tenant_id, which the gateway takes from the API key); no prompt leaves
here but through GetListing, and only for whom the store says may read it.
Mutating calls pass their request id (AIP-155) to the store."""

from __future__ import annotations

import json

import grpc

from swarm.ticketing.v1 import marketplace_pb2 as mpb
from swarm.ticketing.v1 import marketplace_pb2_grpc as mpb_grpc
from swarm_ticketing import marketplace as m
from swarm_ticketing.stores.listings import Listings
from swarm_ticketing.stores.marketplace import Marketplace
from swarm_ticketing.template_servicer import parse_json_object
from swarmcommon import validation as v
from swarmcommon.authz import Access, allow
from swarmcommon.errors import InvalidArgument
from swarmcommon.idempotency import request_key
from swarmcommon.pagination import page_size
from swarmcommon.protos import timestamp

SERVICE_NAME = "swarm.ticketing.v1.MarketplaceService"
_TENANTS = allow("gateway", operators=True)
ACCESS: Access = {
    name: _TENANTS
    for name in (
        "PublishListing",
        "UpdateListing",
        "SearchListings",
        "GetListing",
        "InstallListing",
        "UninstallListing",
        "ReviewListing",
    )
}


def fields_from_proto(f: mpb.ListingFields) -> m.ListingFields:
    pricing = m.pricing(f.pricing_model)
    return m.ListingFields(
        name=v.required_text("name", f.name, 200),
        description=v.bounded_text("description", f.description, 4000),
        category=m.category(f.category),
        tags=m.tags(f.tags),
        visibility=m.visibility(f.visibility),
        pricing=pricing,
        price_usd_micros=m.check_price(pricing, f.price_usd_micros),
        config_schema=m.config_schema(f.config_schema_json),
    )


def draft_from_proto(d: mpb.ListingVersion) -> m.Draft:
    return m.Draft(
        prompt=d.prompt,
        model=d.model,
        parameters=parse_json_object("parameters_json", d.parameters_json),
        tools=parse_json_object("tools_json", d.tools_json),
    )


def listing_to_proto(x: m.Listing, viewer: str) -> mpb.MarketplaceListing:
    return mpb.MarketplaceListing(
        id=x.id,
        slug=x.slug,
        agent_type=x.agent_type,
        name=x.name,
        description=x.description,
        category=x.category.value,
        tags=list(x.tags),
        visibility=x.visibility.value,
        pricing_model=x.pricing.value,
        price_usd_micros=x.price_usd_micros,
        config_schema_json=json.dumps(x.config_schema, separators=(",", ":"), sort_keys=True),
        version=x.version,
        install_count=x.install_count,
        rating_count=x.rating_count,
        rating_average=x.rating_average,
        is_author=x.author_tenant_id == viewer,
        create_time=timestamp(x.created_at),
        update_time=timestamp(x.updated_at),
    )


def installation_to_proto(i: m.Installation) -> mpb.MarketplaceInstallation:
    return mpb.MarketplaceInstallation(
        id=i.id,
        listing_id=i.listing_id,
        slug=i.slug,
        version=i.version,
        config_json=json.dumps(i.config, separators=(",", ":"), sort_keys=True),
        create_time=timestamp(i.created_at),
    )


def entry_to_proto(e: m.LedgerEntry) -> mpb.MarketplaceLedgerEntry:
    return mpb.MarketplaceLedgerEntry(
        id=e.id,
        listing_id=e.listing_id,
        kind=e.kind.value,
        price_usd_micros=e.price_usd_micros,
        platform_usd_micros=e.platform_usd_micros,
        author_usd_micros=e.author_usd_micros,
        create_time=timestamp(e.created_at),
    )


def review_to_proto(r: m.Review) -> mpb.MarketplaceReview:
    return mpb.MarketplaceReview(
        id=r.id,
        listing_id=r.listing_id,
        rating=r.rating,
        title=r.title,
        body=r.body,
        create_time=timestamp(r.created_at),
    )


def _tenant(tenant_id: str) -> str:
    """Marketplace calls act for a tenant: "" (the platform's scope) is refused."""
    return v.name_id("tenant_id", tenant_id)


class MarketplaceServicer(mpb_grpc.MarketplaceServiceServicer):  # type: ignore[misc]
    def __init__(self, listings: Listings, marketplace: Marketplace) -> None:
        self.listings = listings
        self.marketplace = marketplace

    def PublishListing(
        self, request: mpb.PublishListingRequest, context: grpc.ServicerContext
    ) -> mpb.PublishListingResponse:
        tenant = _tenant(request.tenant_id)
        if not request.HasField("version"):
            raise InvalidArgument("version", "a listing is published with its first version (a prompt)")
        listing = self.listings.publish(
            tenant,
            request.slug,
            request.agent_type,
            fields_from_proto(request.fields),
            draft_from_proto(request.version),
            request_key(tenant, request),
        )
        return mpb.PublishListingResponse(listing=listing_to_proto(listing, tenant))

    def UpdateListing(
        self, request: mpb.UpdateListingRequest, context: grpc.ServicerContext
    ) -> mpb.UpdateListingResponse:
        tenant = _tenant(request.tenant_id)
        listing = self.listings.update(
            tenant,
            v.uuid_id("listing_id", request.listing_id),
            fields_from_proto(request.fields),
            draft_from_proto(request.version) if request.HasField("version") else None,
            request_key(tenant, request),
        )
        return mpb.UpdateListingResponse(listing=listing_to_proto(listing, tenant))

    def SearchListings(
        self, request: mpb.SearchListingsRequest, context: grpc.ServicerContext
    ) -> mpb.SearchListingsResponse:
        tenant = _tenant(request.tenant_id)
        tag = request.tag.strip().lower()
        if tag:
            m.tags([tag])  # the shape of a tag, or INVALID_ARGUMENT naming it
        page = self.marketplace.search(
            tenant,
            m.category(request.category) if request.category else None,
            tag,
            v.bounded_text("query", request.query, 200).strip(),
            m.sort(request.sort),
            page_size(request.page_size),
            request.page_token,
        )
        return mpb.SearchListingsResponse(
            listings=[listing_to_proto(x, tenant) for x in page.items], next_page_token=page.next_page_token
        )

    def GetListing(
        self, request: mpb.GetListingRequest, context: grpc.ServicerContext
    ) -> mpb.GetListingResponse:
        tenant = _tenant(request.tenant_id)
        detail = self.marketplace.detail(tenant, request.slug)
        reply = mpb.GetListingResponse(
            listing=listing_to_proto(detail.listing, tenant),
            prompt=detail.prompt if detail.prompt_visible else "",
            prompt_visible=detail.prompt_visible,
            model=detail.model,
        )
        if detail.installation is not None:
            reply.installation.CopyFrom(installation_to_proto(detail.installation))
        return reply

    def InstallListing(
        self, request: mpb.InstallListingRequest, context: grpc.ServicerContext
    ) -> mpb.InstallListingResponse:
        tenant = _tenant(request.tenant_id)
        installation, charge = self.marketplace.install(
            tenant, request.slug, request.config_json, request_key(tenant, request)
        )
        reply = mpb.InstallListingResponse(installation=installation_to_proto(installation))
        if charge is not None:
            reply.charge.CopyFrom(entry_to_proto(charge))
        return reply

    def UninstallListing(
        self, request: mpb.UninstallListingRequest, context: grpc.ServicerContext
    ) -> mpb.UninstallListingResponse:
        tenant = _tenant(request.tenant_id)
        installation = self.marketplace.uninstall(
            tenant, v.uuid_id("installation_id", request.installation_id), request_key(tenant, request)
        )
        return mpb.UninstallListingResponse(installation=installation_to_proto(installation))

    def ReviewListing(
        self, request: mpb.ReviewListingRequest, context: grpc.ServicerContext
    ) -> mpb.ReviewListingResponse:
        tenant = _tenant(request.tenant_id)
        review, listing = self.marketplace.review(
            tenant,
            v.uuid_id("listing_id", request.listing_id),
            request.rating,
            v.bounded_text("title", request.title, 200),
            v.bounded_text("body", request.body, 4000),
            request_key(tenant, request),
        )
        return mpb.ReviewListingResponse(
            review=review_to_proto(review), listing=listing_to_proto(listing, tenant)
        )
