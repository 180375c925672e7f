"""Request ids (AIP-155) on MarketplaceService's mutating calls (both
backends): a retry with the same request_id answers as the first call did
and writes nothing (one listing, one installation, one purchase, the
install count and the rating moved once); the same request_id on a
different request is INVALID_ARGUMENT and writes nothing either. Without a
request id, a second install or review is still ALREADY_EXISTS."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from google.protobuf.message import Message

from swarm.ticketing.v1 import marketplace_pb2 as mpb
from swarm.ticketing.v1 import marketplace_pb2_grpc as mpb_grpc
from swarm_ticketing.marketplace_tables import marketplace_installations, marketplace_ledger
from tests.support.harness import BACKENDS, TicketingHarness, start_ticketing
from tests.support.status import raises_status
from tests.support.ticketing import snapshot, tenant

pytestmark = BACKENDS
PRICE = 4_990_000
SCHEMA = {"type": "object", "properties": {"severity": {"enum": ["low", "high"]}}}


@pytest.fixture
def market(db: str) -> Iterator[TicketingHarness]:
    harness = start_ticketing(db, marketplace_key=Fernet.generate_key().decode())
    try:
        yield harness
    finally:
        harness.stop()


def _stub(h: TicketingHarness) -> mpb_grpc.MarketplaceServiceStub:
    return mpb_grpc.MarketplaceServiceStub(h.channel)


def _fields(name: str = "Auditor") -> mpb.ListingFields:
    return mpb.ListingFields(
        name=name,
        category="security",
        visibility="public",
        pricing_model="one_time",
        price_usd_micros=PRICE,
        config_schema_json=json.dumps(SCHEMA),
    )


def _publish_request(author: str, rid: str = "", name: str = "Auditor") -> mpb.PublishListingRequest:
    return mpb.PublishListingRequest(
        tenant_id=author,
        slug=f"{author}-auditor",
        agent_type="security",
        fields=_fields(name),
        version=mpb.ListingVersion(prompt="Audit it."),
        request_id=rid,
    )


def _install_request(
    buyer: str, slug: str, rid: str = "", severity: str = "high"
) -> mpb.InstallListingRequest:
    return mpb.InstallListingRequest(
        tenant_id=buyer, slug=slug, config_json=json.dumps({"severity": severity}), request_id=rid
    )


def _published(h: TicketingHarness, author: str) -> dict[str, Any]:
    listing = _stub(h).PublishListing(_publish_request(author)).listing
    return {"author": author, "buyer": tenant(), "listing": listing}


def _installed(h: TicketingHarness, author: str) -> dict[str, Any]:
    c = _published(h, author)
    c["installation"] = _stub(h).InstallListing(_install_request(c["buyer"], c["listing"].slug)).installation
    return c


def _author(h: TicketingHarness, author: str) -> dict[str, Any]:
    return {"author": author}


def _update(c: dict[str, Any], rid: str, prompt: str) -> mpb.UpdateListingRequest:
    return mpb.UpdateListingRequest(
        tenant_id=c["author"],
        listing_id=c["listing"].id,
        fields=_fields("Auditor II"),
        version=mpb.ListingVersion(prompt=prompt),
        request_id=rid,
    )


def _review(c: dict[str, Any], rid: str, rating: int) -> mpb.ReviewListingRequest:
    return mpb.ReviewListingRequest(
        tenant_id=c["buyer"], listing_id=c["listing"].id, rating=rating, title="Good", request_id=rid
    )


def _uninstall(c: dict[str, Any], rid: str, installation_id: str = "") -> mpb.UninstallListingRequest:
    return mpb.UninstallListingRequest(
        tenant_id=c["buyer"], installation_id=installation_id or c["installation"].id, request_id=rid
    )


Call = Callable[[mpb_grpc.MarketplaceServiceStub, dict[str, Any], str], Message]


@dataclass(frozen=True)
class Case:
    setup: Callable[[TicketingHarness, str], dict[str, Any]]
    call: Call
    # The same request_id on a request that differs in one field.
    other: Call


CASES = {
    "PublishListing": Case(
        _author,
        lambda s, c, rid: s.PublishListing(_publish_request(c["author"], rid)),
        lambda s, c, rid: s.PublishListing(_publish_request(c["author"], rid, name="Other")),
    ),
    "UpdateListing": Case(
        _published,
        lambda s, c, rid: s.UpdateListing(_update(c, rid, "Audit it again.")),
        lambda s, c, rid: s.UpdateListing(_update(c, rid, "Audit something else.")),
    ),
    "InstallListing": Case(
        _published,
        lambda s, c, rid: s.InstallListing(_install_request(c["buyer"], c["listing"].slug, rid)),
        lambda s, c, rid: s.InstallListing(_install_request(c["buyer"], c["listing"].slug, rid, "low")),
    ),
    "UninstallListing": Case(
        _installed,
        lambda s, c, rid: s.UninstallListing(_uninstall(c, rid)),
        lambda s, c, rid: s.UninstallListing(_uninstall(c, rid, str(uuid.uuid4()))),
    ),
    "ReviewListing": Case(
        _installed,
        lambda s, c, rid: s.ReviewListing(_review(c, rid, 4)),
        lambda s, c, rid: s.ReviewListing(_review(c, rid, 5)),
    ),
}
RPCS = pytest.mark.parametrize("rpc", list(CASES))


def _purchases(h: TicketingHarness, buyer: str) -> int:
    led = marketplace_ledger
    with h.app.db.engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).where(led.c.buyer_tenant_id == buyer)).scalar_one()
        )


def _installations(h: TicketingHarness, buyer: str) -> int:
    mi = marketplace_installations
    with h.app.db.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(mi.c.tenant_id == buyer)).scalar_one())


@RPCS
def test_a_retry_answers_as_the_first_call_and_writes_nothing(market: TicketingHarness, rpc: str) -> None:
    case, stub = CASES[rpc], _stub(market)
    ctx = case.setup(market, tenant())
    first = case.call(stub, ctx, "req-1")
    before = snapshot(market)
    market.clock.advance(timedelta(seconds=30))  # an update's time must not move again
    again = case.call(stub, ctx, "req-1")
    assert again == first
    assert snapshot(market) == before


@RPCS
def test_a_request_id_reused_for_another_request_is_refused(market: TicketingHarness, rpc: str) -> None:
    case, stub = CASES[rpc], _stub(market)
    ctx = case.setup(market, tenant())
    case.call(stub, ctx, "req-1")
    before = snapshot(market)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id", rpc):
        case.other(stub, ctx, "req-1")
    assert snapshot(market) == before


def test_a_retried_install_buys_and_counts_once(market: TicketingHarness) -> None:
    stub = _stub(market)
    c = _published(market, tenant())
    first = stub.InstallListing(_install_request(c["buyer"], c["listing"].slug, "buy-1"))
    assert first.charge.price_usd_micros == PRICE
    again = stub.InstallListing(_install_request(c["buyer"], c["listing"].slug, "buy-1"))
    assert again == first
    assert (_installations(market, c["buyer"]), _purchases(market, c["buyer"])) == (1, 1)
    detail = stub.GetListing(mpb.GetListingRequest(tenant_id=c["buyer"], slug=c["listing"].slug))
    assert detail.listing.install_count == 1
    # Without a request id (or with another one), a second install is what it always was.
    with raises_status(grpc.StatusCode.ALREADY_EXISTS, "already installed"):
        stub.InstallListing(_install_request(c["buyer"], c["listing"].slug))
    with raises_status(grpc.StatusCode.ALREADY_EXISTS, "already installed"):
        stub.InstallListing(_install_request(c["buyer"], c["listing"].slug, "buy-2"))


def test_a_retried_install_after_an_uninstall_answers_the_first_installation(
    market: TicketingHarness,
) -> None:
    stub = _stub(market)
    c = _published(market, tenant())
    first = stub.InstallListing(_install_request(c["buyer"], c["listing"].slug, "buy-1"))
    stub.UninstallListing(
        mpb.UninstallListingRequest(tenant_id=c["buyer"], installation_id=first.installation.id)
    )
    before = snapshot(market)
    assert stub.InstallListing(_install_request(c["buyer"], c["listing"].slug, "buy-1")) == first
    assert snapshot(market) == before
    assert _installations(market, c["buyer"]) == 0


def test_a_retried_review_counts_the_rating_once(market: TicketingHarness) -> None:
    stub = _stub(market)
    c = _installed(market, tenant())
    first = stub.ReviewListing(_review(c, "rate-1", 4))
    again = stub.ReviewListing(_review(c, "rate-1", 4))
    assert again == first
    assert (again.listing.rating_count, again.listing.rating_average) == (1, 4.0)
    with raises_status(grpc.StatusCode.ALREADY_EXISTS, "already reviewed"):
        stub.ReviewListing(_review(c, "", 4))


def test_a_retried_publish_is_not_a_duplicate_slug(market: TicketingHarness) -> None:
    stub, author = _stub(market), tenant()
    first = stub.PublishListing(_publish_request(author, "pub-1"))
    assert stub.PublishListing(_publish_request(author, "pub-1")) == first
    with raises_status(grpc.StatusCode.ALREADY_EXISTS, "slug"):
        stub.PublishListing(_publish_request(author, "pub-2"))


@pytest.mark.parametrize("rpc", ["PublishListing", "InstallListing", "ReviewListing"])
def test_concurrent_retries_get_one_answer_and_one_write(market: TicketingHarness, rpc: str) -> None:
    case, stub = CASES[rpc], _stub(market)
    ctx = case.setup(market, tenant())
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: case.call(stub, ctx, "same"), range(8)))
    assert all(a == answers[0] for a in answers)
    before = snapshot(market)
    assert case.call(stub, ctx, "same") == answers[0]
    assert snapshot(market) == before
    if rpc == "InstallListing":
        assert (_installations(market, ctx["buyer"]), _purchases(market, ctx["buyer"])) == (1, 1)
