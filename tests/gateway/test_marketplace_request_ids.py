"""Marketplace writes are idempotent through the gateway (both backends):
without an Idempotency-Key the gateway gives each HTTP request one
request_id, so the channel retrying an install whose answer was lost (after
ticketing committed it) installs and charges once; with one, a client's
own retry answers as the first request did."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from swarm_ticketing.marketplace_tables import marketplace_installations, marketplace_ledger
from swarmcommon.db import create_engine
from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh, lossy_proxy, run_mesh

pytestmark = BACKENDS
INSTALL = "/swarm.ticketing.v1.MarketplaceService/InstallListing"
PUBLISH = "/swarm.ticketing.v1.MarketplaceService/PublishListing"
REVIEW = "/swarm.ticketing.v1.MarketplaceService/ReviewListing"
PRICE = 4_990_000


@pytest.fixture
def market(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mesh]:
    """A mesh whose ticketing has a marketplace key (read from its environment)."""
    monkeypatch.setenv("SWARM_TICKETING_MARKETPLACE_KEY", Fernet.generate_key().decode())
    yield from run_mesh(
        f"sqlite:///{tmp_path / 'quota.db'}",
        db,
        f"sqlite:///{tmp_path / 'events.db'}",
        f"sqlite:///{tmp_path / 'telemetry.db'}",
    )


def _listing(slug: str) -> dict[str, object]:
    return {
        "slug": slug,
        "agent_type": "security",
        "name": "HIPAA Compliance",
        "category": "domain",
        "visibility": "public",
        "pricing_model": "one_time",
        "price_usd_micros": PRICE,
        "prompt": "Check the health-data handling.",
    }


def _rows(db: str, buyer: str) -> tuple[int, int]:
    """The buyer's installations and ledger rows, read from ticketing's database."""
    engine = create_engine(db, pool_size=1)
    mi, led = marketplace_installations, marketplace_ledger
    try:
        with engine.connect() as conn:
            installed = conn.execute(sa.select(sa.func.count()).where(mi.c.tenant_id == buyer)).scalar_one()
            bought = conn.execute(
                sa.select(sa.func.count()).where(led.c.buyer_tenant_id == buyer)
            ).scalar_one()
        return int(installed), int(bought)
    finally:
        engine.dispose()


def _install_count(client: httpx.Client, slug: str) -> int:
    count: int = client.get(f"/api/marketplace/templates/{slug}").json()["listing"]["install_count"]
    return count


def test_a_lost_install_answer_retried_by_the_channel_buys_once(market: Mesh, db: str) -> None:
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    slug = f"{a}-hipaa"
    with (
        lossy_proxy(market.app.state.settings.ticketing_target) as proxy,
        market.gateway(ticketing_target=proxy.target) as base_url,
        market.as_key(market.tenant_with_key(a), base_url) as as_a,
        market.as_key(market.tenant_with_key(b), base_url) as as_b,
    ):
        proxy.lose_answers(PUBLISH)
        published = as_a.post("/api/marketplace/templates", json=_listing(slug))
        assert published.status_code == 201, published.text  # not a duplicate slug
        assert proxy.forwarded[PUBLISH] == 2

        proxy.lose_answers(INSTALL)
        made = as_b.post(f"/api/marketplace/templates/{slug}/install", json={"config": {}})
        assert made.status_code == 201, made.text  # not ALREADY_EXISTS
        # The backend saw the call twice: the first answer was lost, the channel retried.
        assert proxy.forwarded[INSTALL] == 2
        assert made.json()["charge"]["price_usd_micros"] == PRICE
        assert _rows(db, b) == (1, 1)
        assert _install_count(as_b, slug) == 1

        proxy.lose_answers(REVIEW)
        listing_id = published.json()["id"]
        reviewed = as_b.post(f"/api/marketplace/templates/{listing_id}/reviews", json={"rating": 4})
        assert reviewed.status_code == 201, reviewed.text
        assert proxy.forwarded[REVIEW] == 2
        assert reviewed.json()["listing"]["rating_count"] == 1


def test_an_idempotency_key_makes_a_client_retry_answer_as_the_first(market: Mesh, db: str) -> None:
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    slug = f"{a}-hipaa"
    with market.as_key(market.tenant_with_key(a)) as as_a, market.as_key(market.tenant_with_key(b)) as as_b:
        assert as_a.post("/api/marketplace/templates", json=_listing(slug)).status_code == 201
        url, key = f"/api/marketplace/templates/{slug}/install", {"Idempotency-Key": "install-1"}
        first = as_b.post(url, json={"config": {}}, headers=key)
        again = as_b.post(url, json={"config": {}}, headers=key)
        assert first.status_code == again.status_code == 201, (first.text, again.text)
        assert again.json() == first.json()
        assert _rows(db, b) == (1, 1)
        other = as_b.post(url, json={"config": {"x": 1}}, headers=key)
        assert other.status_code == 400 and "request_id" in other.text, other.text
        # Without a key each request is its own: a second install is a conflict.
        assert as_b.post(url, json={"config": {}}).status_code == 409
        installation = first.json()["installation"]["id"]
        gone = as_b.delete(
            f"/api/marketplace/installations/{installation}", headers={"Idempotency-Key": "u-1"}
        )
        again = as_b.delete(
            f"/api/marketplace/installations/{installation}", headers={"Idempotency-Key": "u-1"}
        )
        assert gone.status_code == again.status_code == 200 and again.json() == gone.json()
        assert _install_count(as_b, slug) == 0
