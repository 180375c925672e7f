"""Attacks on the template marketplace through ticketing's MarketplaceService
with the gateway's own certificate (as a compromised tenant's requests
arrive), on a real server with mutual TLS: tenant B reading A's paid prompt
through every RPC that answers about a listing, B reviewing twice, B
uninstalling C's installation, B rewriting A's listing — each refused, and
A's data untouched. No mesh service but the gateway (and operators) may call it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.fernet import Fernet

from swarm.ticketing.v1 import marketplace_pb2 as mpb
from swarm.ticketing.v1 import marketplace_pb2_grpc as mpb_grpc
from swarm.ticketing.v1 import templates_pb2 as tpb
from swarm.ticketing.v1 import templates_pb2_grpc as tpb_grpc
from tests.support.pki import MeshPki, own_channel
from tests.support.secure import SecureService, start_secure
from tests.support.status import raises_status

SECRET = "sk-proprietary-audit-playbook-7731"


@pytest.fixture(scope="module")
def ticketing(pki: MeshPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureService]:
    """Ticketing with a marketplace key (the shared `servers` have none)."""
    workdir = Path(tmp_path_factory.mktemp("market"))
    service = start_secure("ticketing", pki, workdir, marketplace_key=Fernet.generate_key().decode())
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def gateway(ticketing: SecureService, pki: MeshPki) -> Iterator[grpc.Channel]:
    ch = own_channel(ticketing.target, pki.identity("gateway"))
    try:
        yield ch
    finally:
        ch.close()


def _publish(
    stub: mpb_grpc.MarketplaceServiceStub, author: str, slug: str, pricing: str, price: int
) -> mpb.MarketplaceListing:
    return stub.PublishListing(
        mpb.PublishListingRequest(
            tenant_id=author,
            slug=slug,
            agent_type="reviewer",
            fields=mpb.ListingFields(
                name="Perf reviewer",
                category="review",
                visibility="public",
                pricing_model=pricing,
                price_usd_micros=price,
            ),
            version=mpb.ListingVersion(prompt=SECRET),
        )
    ).listing


def test_a_non_buyer_never_receives_a_paid_prompt(gateway: grpc.Channel) -> None:
    market, templates = mpb_grpc.MarketplaceServiceStub(gateway), tpb_grpc.AgentTemplateServiceStub(gateway)
    per_use = _publish(market, "acme", "acme-perf", "per_use", 10_000)
    one_time = _publish(market, "acme", "acme-perf-pro", "one_time", 990_000)
    # B installs the per-use one (paying per run, not buying the prompt).
    installed = market.InstallListing(mpb.InstallListingRequest(tenant_id="mallory", slug=per_use.slug))
    replies: list[object] = [installed]
    for slug in (per_use.slug, one_time.slug):
        replies.append(market.GetListing(mpb.GetListingRequest(tenant_id="mallory", slug=slug)))
    for sort in ("rating", "installs", "recent"):
        replies.append(market.SearchListings(mpb.SearchListingsRequest(tenant_id="mallory", sort=sort)))
    replies.append(
        market.ReviewListing(mpb.ReviewListingRequest(tenant_id="mallory", listing_id=per_use.id, rating=1))
    )
    replies.append(templates.GetTemplate(tpb.GetTemplateRequest(tenant_id="mallory", slug=per_use.slug)))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        templates.GetTemplate(tpb.GetTemplateRequest(tenant_id="mallory", slug=one_time.slug))
    with raises_status(grpc.StatusCode.NOT_FOUND):  # nor by rewriting A's listing to free
        market.UpdateListing(
            mpb.UpdateListingRequest(
                tenant_id="mallory",
                listing_id=one_time.id,
                fields=mpb.ListingFields(name="mine now", category="review", visibility="public"),
            )
        )
    replies.append(
        market.UninstallListing(
            mpb.UninstallListingRequest(tenant_id="mallory", installation_id=installed.installation.id)
        )
    )
    for reply in replies:
        assert SECRET.encode() not in reply.SerializeToString(), type(reply).__name__  # type: ignore[attr-defined]
    # The author reads it; and so does a buyer of the one-time listing once it paid.
    assert market.GetListing(mpb.GetListingRequest(tenant_id="acme", slug=one_time.slug)).prompt == SECRET
    market.InstallListing(mpb.InstallListingRequest(tenant_id="buyer", slug=one_time.slug))
    assert market.GetListing(mpb.GetListingRequest(tenant_id="buyer", slug=one_time.slug)).prompt == SECRET


def test_reviewing_twice_and_uninstalling_anothers_installation_are_refused(gateway: grpc.Channel) -> None:
    market = mpb_grpc.MarketplaceServiceStub(gateway)
    listing = _publish(market, "acme", "acme-docs", "free", 0)
    victim = market.InstallListing(
        mpb.InstallListingRequest(tenant_id="carol", slug=listing.slug)
    ).installation
    market.InstallListing(mpb.InstallListingRequest(tenant_id="mallory", slug=listing.slug))
    market.ReviewListing(mpb.ReviewListingRequest(tenant_id="mallory", listing_id=listing.id, rating=1))
    with raises_status(grpc.StatusCode.ALREADY_EXISTS, "already reviewed"):
        market.ReviewListing(mpb.ReviewListingRequest(tenant_id="mallory", listing_id=listing.id, rating=1))
    with raises_status(grpc.StatusCode.NOT_FOUND, victim.id):
        market.UninstallListing(mpb.UninstallListingRequest(tenant_id="mallory", installation_id=victim.id))
    after = market.GetListing(mpb.GetListingRequest(tenant_id="carol", slug=listing.slug))
    assert after.installation.id == victim.id
    assert (after.listing.install_count, after.listing.rating_count, after.listing.rating_average) == (
        2,
        1,
        1.0,
    )


def test_the_platform_scope_and_agents_are_refused(
    ticketing: SecureService, pki: MeshPki, gateway: grpc.Channel
) -> None:
    market = mpb_grpc.MarketplaceServiceStub(gateway)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "tenant_id"):
        market.SearchListings(mpb.SearchListingsRequest(tenant_id=""))
    agent = mpb_grpc.MarketplaceServiceStub(own_channel(ticketing.target, pki.identity("vmhost")))
    with pytest.raises(grpc.RpcError) as refused:
        agent.SearchListings(mpb.SearchListingsRequest(tenant_id="acme"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
