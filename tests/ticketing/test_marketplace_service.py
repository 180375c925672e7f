"""MarketplaceService over gRPC (both backends): an author publishes, others
search, install with a configuration the listing's JSON Schema accepts,
review, and the average follows; an installed template deploys and its
claims carry the prompt; private listings are NOT_FOUND to others;
purchases and per-use claims land in the ledger split to the micro-dollar;
bad inputs are refused, each with the truthful code, and write nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from swarm.ticketing.v1 import marketplace_pb2 as mpb
from swarm.ticketing.v1 import marketplace_pb2_grpc as mpb_grpc
from swarm.ticketing.v1 import templates_pb2 as tpb
from swarm.ticketing.v1 import templates_pb2_grpc as tpb_grpc
from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing.marketplace import SEALED_PLACEHOLDER
from swarm_ticketing.marketplace_tables import (
    marketplace_ledger,
    marketplace_versions,
)
from swarm_ticketing.tables import (
    agent_template_versions,
)
from tests.support.harness import BACKENDS, TicketingHarness, start_ticketing
from tests.support.status import raises_status
from tests.support.ticketing import claim, create_project, snapshot, spec, tenant

pytestmark = BACKENDS
KEY = Fernet.generate_key().decode()
SCHEMA = {
    "type": "object",
    "properties": {
        "severity": {"enum": ["low", "high"]},
        "paths": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["severity"],
    "additionalProperties": False,
}


@pytest.fixture
def market(db: str) -> Iterator[TicketingHarness]:
    harness = start_ticketing(db, marketplace_key=KEY)
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def stub(market: TicketingHarness) -> mpb_grpc.MarketplaceServiceStub:
    return mpb_grpc.MarketplaceServiceStub(market.channel)


def fields(**overrides: Any) -> mpb.ListingFields:
    values: dict[str, Any] = {
        "name": "OWASP Auditor",
        "description": "Audits a change against the OWASP top ten",
        "category": "Security",
        "tags": ["owasp", "python"],
        "visibility": "public",
        "pricing_model": "free",
        "price_usd_micros": 0,
        "config_schema_json": json.dumps(SCHEMA),
    }
    return mpb.ListingFields(**{**values, **overrides})


def publish(
    stub: mpb_grpc.MarketplaceServiceStub, author: str, slug: str = "", prompt: str = "Audit it.", **kw: Any
) -> mpb.MarketplaceListing:
    return stub.PublishListing(
        mpb.PublishListingRequest(
            tenant_id=author,
            slug=slug or f"{author}-auditor",
            agent_type="security",
            fields=fields(**kw),
            version=mpb.ListingVersion(prompt=prompt, parameters_json='{"max_tokens": 1024}'),
        )
    ).listing


def install(
    stub: mpb_grpc.MarketplaceServiceStub, t: str, slug: str, config: str = '{"severity": "high"}'
) -> mpb.InstallListingResponse:
    return stub.InstallListing(mpb.InstallListingRequest(tenant_id=t, slug=slug, config_json=config))


def review(
    stub: mpb_grpc.MarketplaceServiceStub, t: str, listing_id: str, rating: int
) -> mpb.ReviewListingResponse:
    return stub.ReviewListing(mpb.ReviewListingRequest(tenant_id=t, listing_id=listing_id, rating=rating))


def ledger(h: TicketingHarness, listing_id: str) -> list[tuple[str, str, int, int, int]]:
    led = marketplace_ledger
    with h.app.db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                led.c.kind,
                led.c.buyer_tenant_id,
                led.c.price_usd_micros,
                led.c.platform_usd_micros,
                led.c.author_usd_micros,
            )
            .where(led.c.listing_id == listing_id)
            .order_by(led.c.seq)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_publish_search_install_review_and_the_average(
    market: TicketingHarness, stub: mpb_grpc.MarketplaceServiceStub
) -> None:
    a, b, c = tenant(), tenant(), tenant()
    listing = publish(stub, a)
    market.clock.advance(timedelta(seconds=1))
    assert (listing.category, list(listing.tags), listing.version, listing.is_author) == (
        "security",
        ["owasp", "python"],
        1,
        True,
    )
    other = publish(
        stub,
        a,
        slug=f"{a}-docs",
        name="Changelog Writer",
        description="Writes the changelog",
        category="documentation",
        tags=["docs"],
    )

    def found(**kw: Any) -> list[str]:
        reply = stub.SearchListings(mpb.SearchListingsRequest(tenant_id=b, **kw))
        return [x.slug for x in reply.listings if x.slug in (listing.slug, other.slug)]

    assert found(category="security") == [listing.slug]
    assert found(tag="owasp") == [listing.slug]
    assert found(query="changelog") == [other.slug]
    assert found(query="OWASP TOP") == [listing.slug]
    assert found(tag="nothing") == []

    for t in (b, c):
        got = install(stub, t, listing.slug)
        assert got.installation.slug == listing.slug and not got.HasField("charge")
    assert review(stub, b, listing.id, 5).listing.rating_average == 5.0
    after = review(stub, c, listing.id, 2).listing
    assert (after.rating_count, after.rating_average, after.install_count) == (2, 3.5, 2)
    detail = stub.GetListing(mpb.GetListingRequest(tenant_id=b, slug=listing.slug))
    assert detail.installation.config_json == '{"severity":"high"}'
    assert (detail.prompt_visible, detail.prompt) == (True, "Audit it.")  # a free listing's installer
    assert not detail.listing.is_author
    assert found(sort="rating") == [listing.slug, other.slug]
    assert found(sort="installs") == [listing.slug, other.slug]
    assert found(sort="recent") == [other.slug, listing.slug]


def test_search_pages_and_hides_private_and_unlisted(
    market: TicketingHarness, stub: mpb_grpc.MarketplaceServiceStub
) -> None:
    a, b = tenant(), tenant()
    public = []
    for i in range(5):
        public.append(publish(stub, a, slug=f"{a}-p{i}", tags=[a]).slug)
        market.clock.advance(timedelta(seconds=1))
    publish(stub, a, slug=f"{a}-private", visibility="private", tags=[a])
    unlisted = publish(stub, a, slug=f"{a}-unlisted", visibility="unlisted", tags=[a])
    seen, token = [], ""
    while True:
        page = stub.SearchListings(
            mpb.SearchListingsRequest(tenant_id=b, tag=a, sort="recent", page_size=2, page_token=token)
        )
        seen += [x.slug for x in page.listings]
        token = page.next_page_token
        if not token:
            break
    assert seen == public[::-1]
    # Unlisted: not searchable, but reachable (and installable) by its slug.
    assert stub.GetListing(mpb.GetListingRequest(tenant_id=b, slug=unlisted.slug)).listing.id == unlisted.id
    assert install(stub, b, unlisted.slug).installation.listing_id == unlisted.id
    # Private: NOT_FOUND to another tenant on every call, as a slug that does not exist.
    for slug in (f"{a}-private", f"{a}-missing"):
        with raises_status(grpc.StatusCode.NOT_FOUND, "marketplace template not found"):
            stub.GetListing(mpb.GetListingRequest(tenant_id=b, slug=slug))
        with raises_status(grpc.StatusCode.NOT_FOUND, "marketplace template not found"):
            install(stub, b, slug)
    assert stub.GetListing(mpb.GetListingRequest(tenant_id=a, slug=f"{a}-private")).listing.is_author


def test_an_installed_template_deploys_and_its_claims_carry_the_prompt(
    market: TicketingHarness, stub: mpb_grpc.MarketplaceServiceStub
) -> None:
    a, b = tenant(), tenant()
    listing = publish(
        stub, a, prompt="You audit for secrets.", pricing_model="one_time", price_usd_micros=4_990_000
    )
    templates = tpb_grpc.AgentTemplateServiceStub(market.channel)
    deploy = tpb.CreateDeploymentRequest(tenant_id=b, slug=listing.slug, version=1, rollout_percent=100)
    with raises_status(grpc.StatusCode.NOT_FOUND):
        templates.CreateDeployment(deploy)
    install(stub, b, listing.slug)
    templates.CreateDeployment(deploy)
    # The buyer may read it, sealed at rest as it is.
    got = templates.GetTemplate(tpb.GetTemplateRequest(tenant_id=b, slug=listing.slug))
    assert [v.prompt for v in got.versions] == ["You audit for secrets."]
    create_project(market.stub, b, [spec("s", stages=[pb.AGENT_ROLE_SECURITY])])
    c = claim(market.stub, b, "agent-1", role=pb.AGENT_ROLE_SECURITY)
    assert (c.template.template_slug, c.template.prompt) == (listing.slug, "You audit for secrets.")
    with market.app.db.engine.connect() as conn:
        stored = conn.execute(
            sa.select(agent_template_versions.c.prompt).where(
                agent_template_versions.c.id == c.template.version_id
            )
        ).scalar()
        sealed = conn.execute(
            sa.select(marketplace_versions.c.sealed_prompt).where(
                marketplace_versions.c.version_id == c.template.version_id
            )
        ).scalar()
    assert stored == SEALED_PLACEHOLDER
    assert (
        sealed
        and "secrets" not in sealed
        and Fernet(KEY.encode()).decrypt(sealed.encode()) == b"You audit for secrets."
    )


def test_purchases_and_per_use_claims_are_split_to_the_micro_dollar(
    market: TicketingHarness, stub: mpb_grpc.MarketplaceServiceStub
) -> None:
    a, b = tenant(), tenant()
    once = publish(stub, a, slug=f"{a}-once", pricing_model="one_time", price_usd_micros=4_990_000)
    sub = publish(stub, a, slug=f"{a}-sub", pricing_model="subscription", price_usd_micros=9_990_000)
    use = publish(stub, a, slug=f"{a}-use", pricing_model="per_use", price_usd_micros=50_000)
    charge = install(stub, b, once.slug).charge
    assert (charge.kind, charge.price_usd_micros, charge.platform_usd_micros, charge.author_usd_micros) == (
        "purchase",
        4_990_000,
        998_000,  # 20 %
        3_992_000,
    )
    install(stub, b, sub.slug)
    assert ledger(market, sub.id) == [("subscription", b, 9_990_000, 1_498_500, 8_491_500)]  # 15 %
    # A one-time purchase is made once: uninstalling and installing again charges nothing.
    first = stub.GetListing(mpb.GetListingRequest(tenant_id=b, slug=once.slug)).installation.id
    stub.UninstallListing(mpb.UninstallListingRequest(tenant_id=b, installation_id=first))
    assert not install(stub, b, once.slug).HasField("charge")
    assert ledger(market, once.id) == [("purchase", b, 4_990_000, 998_000, 3_992_000)]
    # Per use: installing is free, each claim of its version is charged 25/75.
    assert not install(stub, b, use.slug).HasField("charge")
    templates = tpb_grpc.AgentTemplateServiceStub(market.channel)
    templates.CreateDeployment(
        tpb.CreateDeploymentRequest(tenant_id=b, slug=use.slug, version=1, rollout_percent=100)
    )
    create_project(market.stub, b, [spec(str(i), stages=[pb.AGENT_ROLE_SECURITY]) for i in range(3)])
    for i in range(3):
        claim(market.stub, b, f"agent-{i}", request_id=f"r-{i}", role=pb.AGENT_ROLE_SECURITY)
    claim(market.stub, b, "agent-0", request_id="r-0", role=pb.AGENT_ROLE_SECURITY)  # a replay: no charge
    assert ledger(market, use.id) == [("use", b, 50_000, 12_500, 37_500)] * 3
    # The author's own runs cost nothing.
    templates.CreateDeployment(
        tpb.CreateDeploymentRequest(tenant_id=a, slug=use.slug, version=1, rollout_percent=100)
    )
    create_project(market.stub, a, [spec("own", stages=[pb.AGENT_ROLE_SECURITY])])
    claim(market.stub, a, "author-agent", role=pb.AGENT_ROLE_SECURITY)
    assert len(ledger(market, use.id)) == 3
    entries = market.app.marketplace.ledger(a) if market.app.marketplace else []
    assert all(e.platform_usd_micros + e.author_usd_micros == e.price_usd_micros for e in entries)
    assert sum(e.author_usd_micros for e in entries) == 3_992_000 + 8_491_500 + 3 * 37_500


def test_update_publishes_versions_and_only_the_author_may(
    market: TicketingHarness, stub: mpb_grpc.MarketplaceServiceStub
) -> None:
    a, b = tenant(), tenant()
    listing = publish(stub, a, prompt="free v1")
    install(stub, b, listing.slug)
    update = mpb.UpdateListingRequest(
        tenant_id=a,
        listing_id=listing.id,
        fields=fields(name="Auditor II", pricing_model="one_time", price_usd_micros=1_000_000),
        version=mpb.ListingVersion(prompt="paid v2"),
    )
    with raises_status(grpc.StatusCode.NOT_FOUND, "marketplace template not found"):
        stub.UpdateListing(mpb.UpdateListingRequest(**{**_msg(update), "tenant_id": b}))
    updated = stub.UpdateListing(update).listing
    assert (updated.name, updated.version, updated.pricing_model) == ("Auditor II", 2, "one_time")
    # Turning paid sealed v1 too, and the free installer no longer reads the prompts.
    with market.app.db.engine.connect() as conn:
        prompts = (
            conn.execute(
                sa.select(agent_template_versions.c.prompt)
                .join(marketplace_versions, marketplace_versions.c.version_id == agent_template_versions.c.id)
                .where(marketplace_versions.c.listing_id == listing.id)
            )
            .scalars()
            .all()
        )
    assert prompts == [SEALED_PLACEHOLDER, SEALED_PLACEHOLDER]
    detail = stub.GetListing(mpb.GetListingRequest(tenant_id=b, slug=listing.slug))
    assert (detail.prompt_visible, detail.prompt) == (False, "")
    templates = tpb_grpc.AgentTemplateServiceStub(market.channel)
    assert [
        v.prompt
        for v in templates.GetTemplate(tpb.GetTemplateRequest(tenant_id=b, slug=listing.slug)).versions
    ] == ["", ""]
    assert [
        v.prompt
        for v in templates.GetTemplate(tpb.GetTemplateRequest(tenant_id=a, slug=listing.slug)).versions
    ] == ["free v1", "paid v2"]
    # A listed template's versions come from the marketplace alone.
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "marketplace listing"):
        templates.AddTemplateVersion(
            tpb.AddTemplateVersionRequest(tenant_id=a, slug=listing.slug, prompt="x")
        )


def _msg(request: mpb.UpdateListingRequest) -> dict[str, Any]:
    return {"listing_id": request.listing_id, "fields": request.fields, "version": request.version}


def test_uninstall_is_refused_while_a_deployment_runs_it(
    market: TicketingHarness, stub: mpb_grpc.MarketplaceServiceStub
) -> None:
    a, b = tenant(), tenant()
    listing = publish(stub, a)
    installation = install(stub, b, listing.slug).installation
    templates = tpb_grpc.AgentTemplateServiceStub(market.channel)
    deployment = templates.CreateDeployment(
        tpb.CreateDeploymentRequest(tenant_id=b, slug=listing.slug, version=1, rollout_percent=100)
    ).deployment
    request = mpb.UninstallListingRequest(tenant_id=b, installation_id=installation.id)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, deployment.id):
        stub.UninstallListing(request)
    templates.PauseDeployment(tpb.PauseDeploymentRequest(tenant_id=b, deployment_id=deployment.id))
    assert stub.UninstallListing(request).installation.id == installation.id
    detail = stub.GetListing(mpb.GetListingRequest(tenant_id=b, slug=listing.slug))
    assert detail.listing.install_count == 0 and not detail.HasField("installation")
    with raises_status(grpc.StatusCode.NOT_FOUND):
        stub.UninstallListing(request)


def test_reviews_under_concurrency_keep_the_average_exact(
    market: TicketingHarness, stub: mpb_grpc.MarketplaceServiceStub
) -> None:
    a = tenant()
    listing = publish(stub, a)
    reviewers = [tenant() for _ in range(12)]
    for t in reviewers:
        install(stub, t, listing.slug)
    errors: list[BaseException] = []

    def rate(t: str, rating: int) -> None:
        try:
            review(stub, t, listing.id, rating)
        except grpc.RpcError as exc:
            errors.append(exc)

    # Each reviewer twice at once: exactly one of its two reviews counts.
    threads = [
        threading.Thread(target=rate, args=(t, 1 + i % 5)) for i, t in enumerate(reviewers) for _ in (0, 1)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(errors) == len(reviewers)
    assert all(e.code() == grpc.StatusCode.ALREADY_EXISTS for e in errors)  # type: ignore[attr-defined]
    got = stub.GetListing(mpb.GetListingRequest(tenant_id=a, slug=listing.slug)).listing
    expected = sum(1 + i % 5 for i in range(len(reviewers)))
    assert (got.rating_count, got.rating_average) == (12, round(expected / 12, 2))


INVALID, EXISTS, PRECONDITION = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
)


def _bad_cases(
    a: str, b: str, slug: str, listing_id: str
) -> list[tuple[str, Callable[[mpb_grpc.MarketplaceServiceStub], object], grpc.StatusCode, str]]:
    def pub(**kw: Any) -> Callable[[mpb_grpc.MarketplaceServiceStub], object]:
        return lambda s: publish(s, a, slug=f"{a}-new", **kw)

    return [
        ("unknown category", pub(category="poetry"), INVALID, "category"),
        (
            "per-use too cheap",
            pub(pricing_model="per_use", price_usd_micros=5_000),
            INVALID,
            "price_usd_micros",
        ),
        ("per-use too dear", pub(pricing_model="per_use", price_usd_micros=2_000_000), INVALID, "$1.00"),
        (
            "fractions of a cent",
            pub(pricing_model="one_time", price_usd_micros=1_234_567),
            INVALID,
            "whole cents",
        ),
        ("a free price", pub(price_usd_micros=10_000), INVALID, "price_usd_micros"),
        ("unknown pricing", pub(pricing_model="pay_what_you_want"), INVALID, "pricing_model"),
        ("unknown visibility", pub(visibility="secret"), INVALID, "visibility"),
        ("bad tag", pub(tags=["no spaces"]), INVALID, "tags"),
        ("schema not JSON", pub(config_schema_json="{"), INVALID, "config_schema"),
        ("schema invalid", pub(config_schema_json='{"type": "nope"}'), INVALID, "not a valid JSON Schema"),
        ("remote $ref", pub(config_schema_json='{"$ref": "http://example.com/s.json"}'), INVALID, "$ref"),
        ("empty prompt", pub(prompt=" "), INVALID, "prompt"),
        ("duplicate slug", lambda s: publish(s, a, slug=slug), EXISTS, "exists"),
        ("another tenant's slug", lambda s: publish(s, b, slug=slug), EXISTS, "exists"),
        (
            "config off schema",
            lambda s: install(s, b, slug, '{"severity": "urgent"}'),
            INVALID,
            "config at severity",
        ),
        ("config missing a field", lambda s: install(s, b, slug, "{}"), INVALID, "'severity' is a required"),
        ("config not an object", lambda s: install(s, b, slug, "[1]"), INVALID, "config"),
        ("author installing", lambda s: install(s, a, slug), PRECONDITION, "your own template"),
        ("rating 6", lambda s: review(s, b, listing_id, 6), INVALID, "rating"),
        ("rating 0", lambda s: review(s, b, listing_id, 0), INVALID, "rating"),
        ("review without install", lambda s: review(s, tenant(), listing_id, 4), PRECONDITION, "install"),
        ("author reviewing", lambda s: review(s, a, listing_id, 5), PRECONDITION, "own template"),
        ("review twice", lambda s: review(s, b, listing_id, 4), EXISTS, "already reviewed"),
        ("install twice", lambda s: install(s, b, slug), EXISTS, "already installed"),
        (
            "bad search sort",
            lambda s: s.SearchListings(mpb.SearchListingsRequest(tenant_id=b, sort="price")),
            INVALID,
            "sort",
        ),
        ("no tenant", lambda s: s.SearchListings(mpb.SearchListingsRequest()), INVALID, "tenant_id"),
    ]


def test_bad_inputs_get_the_truthful_code_and_write_nothing(
    market: TicketingHarness, stub: mpb_grpc.MarketplaceServiceStub
) -> None:
    a, b = tenant(), tenant()
    listing = publish(stub, a)
    install(stub, b, listing.slug)
    review(stub, b, listing.id, 3)
    before = snapshot(market)
    for name, call, code, fragment in _bad_cases(a, b, listing.slug, listing.id):
        with pytest.raises(grpc.RpcError) as caught:
            call(stub)
        assert caught.value.code() == code, (name, caught.value.details())
        assert fragment in (caught.value.details() or ""), (name, caught.value.details())
    assert snapshot(market) == before


def test_paid_listings_need_a_key(ticketing: TicketingHarness) -> None:
    stub = mpb_grpc.MarketplaceServiceStub(ticketing.channel)
    before = snapshot(ticketing)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "SWARM_TICKETING_MARKETPLACE_KEY"):
        publish(stub, tenant(), pricing_model="per_use", price_usd_micros=10_000)
    assert snapshot(ticketing) == before
    assert publish(stub, tenant()).pricing_model == "free"  # free ones need none
