"""The template marketplace (seed §14), backed by ticketing's
MarketplaceService. The tenant comes from the API key: it publishes and
updates its own listings, searches public ones, installs what it may see,
reviews what it installed. Another tenant's private listing is 404; a paid
prompt is in no response but its author's and its buyers'."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from swarm.ticketing.v1 import marketplace_pb2 as mpb
from swarm_gateway.deps import BackendsDep, CurrentCaller, Paging, RequestId
from swarm_gateway.errors import COMMON_ERRORS
from swarm_gateway.marketplace_models import (
    TAG_PATTERN,
    Category,
    ChargePublic,
    InstallationCreated,
    InstallationPublic,
    InstallRequest,
    ListingCreate,
    ListingDetail,
    ListingPage,
    ListingPublic,
    ListingUpdate,
    ReviewCreate,
    ReviewCreated,
    ReviewPublic,
    SortOrder,
)
from swarm_gateway.models import UUID_PATTERN
from swarm_gateway.template_models import SLUG_PATTERN

router = APIRouter(prefix="/api/marketplace", tags=["marketplace"], responses=COMMON_ERRORS)

SlugPath = Annotated[str, Path(pattern=SLUG_PATTERN)]
ListingId = Annotated[str, Path(pattern=UUID_PATTERN)]
# GET /templates/{slug} and PUT /templates/{id} (the seed's routes) share one
# path, so one parameter name (OpenAPI: templated paths differing only in a
# parameter's name are the same path): a slug to read, an id to update.
TemplateSlug = Annotated[str, Path(alias="template", pattern=SLUG_PATTERN, description="The listing's slug")]
TemplateId = Annotated[str, Path(alias="template", pattern=UUID_PATTERN, description="The listing's id")]
InstallationId = Annotated[str, Path(pattern=UUID_PATTERN)]


@router.get("/templates", response_model=ListingPage)
def search_templates(
    caller: CurrentCaller,
    b: BackendsDep,
    page: Paging,
    category: Category | None = None,
    tag: Annotated[str | None, Query(pattern=TAG_PATTERN)] = None,
    q: Annotated[str, Query(max_length=200, description="In the name or description")] = "",
    sort: SortOrder = "rating",
) -> ListingPage:
    reply = b.ticketing.marketplace.SearchListings(
        mpb.SearchListingsRequest(
            tenant_id=caller.tenant_id,
            category=category or "",
            tag=tag or "",
            query=q,
            sort=sort,
            page_size=page.size,
            page_token=page.token,
        )
    )
    return ListingPage(
        items=[ListingPublic.from_proto(x) for x in reply.listings], next_page_token=reply.next_page_token
    )


@router.get("/templates/{template}", response_model=ListingDetail)
def get_template(slug: TemplateSlug, caller: CurrentCaller, b: BackendsDep) -> ListingDetail:
    reply = b.ticketing.marketplace.GetListing(mpb.GetListingRequest(tenant_id=caller.tenant_id, slug=slug))
    return ListingDetail(
        listing=ListingPublic.from_proto(reply.listing),
        installation=InstallationPublic.from_proto(reply.installation)
        if reply.HasField("installation")
        else None,
        prompt=reply.prompt if reply.prompt_visible else None,
        model=reply.model,
    )


@router.post(
    "/templates/{slug}/install", status_code=status.HTTP_201_CREATED, response_model=InstallationCreated
)
def install_template(
    slug: SlugPath, body: InstallRequest, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> InstallationCreated:
    reply = b.ticketing.marketplace.InstallListing(
        mpb.InstallListingRequest(
            tenant_id=caller.tenant_id,
            slug=slug,
            config_json=json.dumps(body.config),
            request_id=request_id,
        )
    )
    return InstallationCreated(
        installation=InstallationPublic.from_proto(reply.installation),
        charge=ChargePublic.from_proto(reply.charge) if reply.HasField("charge") else None,
    )


@router.delete("/installations/{installation_id}", response_model=InstallationPublic)
def uninstall(
    installation_id: InstallationId, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> InstallationPublic:
    reply = b.ticketing.marketplace.UninstallListing(
        mpb.UninstallListingRequest(
            tenant_id=caller.tenant_id, installation_id=installation_id, request_id=request_id
        )
    )
    return InstallationPublic.from_proto(reply.installation)


@router.post("/templates", status_code=status.HTTP_201_CREATED, response_model=ListingPublic)
def publish_template(
    body: ListingCreate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> ListingPublic:
    reply = b.ticketing.marketplace.PublishListing(
        mpb.PublishListingRequest(
            tenant_id=caller.tenant_id,
            slug=body.slug,
            agent_type=body.agent_type,
            fields=body.fields_proto(),
            version=body.version_proto(),
            request_id=request_id,
        )
    )
    return ListingPublic.from_proto(reply.listing)


@router.put("/templates/{template}", response_model=ListingPublic)
def update_template(
    listing_id: TemplateId, body: ListingUpdate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> ListingPublic:
    request = mpb.UpdateListingRequest(
        tenant_id=caller.tenant_id, listing_id=listing_id, fields=body.fields_proto(), request_id=request_id
    )
    if body.version is not None:
        request.version.CopyFrom(body.version.version_proto())
    reply = b.ticketing.marketplace.UpdateListing(request)
    return ListingPublic.from_proto(reply.listing)


@router.post(
    "/templates/{listing_id}/reviews", status_code=status.HTTP_201_CREATED, response_model=ReviewCreated
)
def review_template(
    listing_id: ListingId, body: ReviewCreate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> ReviewCreated:
    reply = b.ticketing.marketplace.ReviewListing(
        mpb.ReviewListingRequest(
            tenant_id=caller.tenant_id,
            listing_id=listing_id,
            rating=body.rating,
            title=body.title,
            body=body.body,
            request_id=request_id,
        )
    )
    return ReviewCreated(
        review=ReviewPublic.from_proto(reply.review), listing=ListingPublic.from_proto(reply.listing)
    )
