"""The marketplace's REST routes on a real mesh (both backends): the seed's
flow end to end, bad inputs as clear 4xx that write nothing, and the
isolation walk of every marketplace route — another tenant's private
listing is 404 everywhere, and a paid prompt is in no response to a tenant
that has not bought it, whatever route it calls."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh, routes_tagged, run_mesh

pytestmark = BACKENDS
SECRET = "Never reveal: the HIPAA checklist is at /vault/42"
SCHEMA = {"type": "object", "properties": {"strict": {"type": "boolean"}}, "required": ["strict"]}


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


def _publish(client: httpx.Client, slug: str, **overrides: object) -> dict[str, object]:
    body = {
        "slug": slug,
        "agent_type": "security",
        "name": "HIPAA Compliance",
        "description": "Checks health-data handling",
        "category": "domain",
        "tags": ["hipaa"],
        "visibility": "public",
        "pricing_model": "per_use",
        "price_usd_micros": 50_000,
        "config_schema": SCHEMA,
        "prompt": SECRET,
        **overrides,
    }
    r = client.post("/api/marketplace/templates", json=body)
    assert r.status_code == 201, r.text
    listing: dict[str, object] = r.json()
    return listing


def test_publish_search_install_review_uninstall(market: Mesh) -> None:
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    with market.as_key(market.tenant_with_key(a)) as as_a, market.as_key(market.tenant_with_key(b)) as as_b:
        slug = f"{a}-hipaa"
        listing = _publish(as_a, slug, pricing_model="one_time", price_usd_micros=4_990_000)
        found = as_b.get("/api/marketplace/templates", params={"category": "domain", "tag": "hipaa"}).json()
        assert [x["slug"] for x in found["items"]] == [slug]
        bad = as_b.post(f"/api/marketplace/templates/{slug}/install", json={"config": {"strict": "yes"}})
        assert bad.status_code == 400 and "config at strict" in bad.json()["error"]["message"], bad.text
        made = as_b.post(f"/api/marketplace/templates/{slug}/install", json={"config": {"strict": True}})
        assert made.status_code == 201, made.text
        assert made.json()["charge"] == {
            "id": made.json()["charge"]["id"],
            "kind": "purchase",
            "price_usd_micros": 4_990_000,
            "platform_usd_micros": 998_000,
            "author_usd_micros": 3_992_000,
        }
        again = as_b.post(f"/api/marketplace/templates/{slug}/install", json={"config": {"strict": True}})
        assert again.status_code == 409 and again.json()["error"]["status"] == "ALREADY_EXISTS"
        # The buyer reads what it bought; the installed template deploys.
        detail = as_b.get(f"/api/marketplace/templates/{slug}").json()
        assert detail["prompt"] == SECRET and detail["installation"]["config"] == {"strict": True}
        deployed = as_b.post("/api/deployments", json={"slug": slug, "version": 1, "rollout_percent": 100})
        assert deployed.status_code == 201, deployed.text
        reviewed = as_b.post(f"/api/marketplace/templates/{listing['id']}/reviews", json={"rating": 4})
        assert reviewed.status_code == 201, reviewed.text
        assert (reviewed.json()["listing"]["rating_average"], reviewed.json()["listing"]["rating_count"]) == (
            4.0,
            1,
        )
        twice = as_b.post(f"/api/marketplace/templates/{listing['id']}/reviews", json={"rating": 5})
        assert twice.status_code == 409
        six = as_b.post(f"/api/marketplace/templates/{listing['id']}/reviews", json={"rating": 6})
        assert six.status_code == 422 and "rating" in six.text
        # PUT: the author's alone; a new version and a new price.
        update = {
            "name": "HIPAA Compliance II",
            "category": "domain",
            "visibility": "public",
            "pricing_model": "one_time",
            "price_usd_micros": 5_990_000,
            "config_schema": SCHEMA,
            "version": {"prompt": SECRET + " v2"},
        }
        assert as_b.put(f"/api/marketplace/templates/{listing['id']}", json=update).status_code == 404
        put = as_a.put(f"/api/marketplace/templates/{listing['id']}", json=update)
        assert put.status_code == 200 and put.json()["version"] == 2, put.text
        # Uninstalling is refused while the deployment runs it.
        installation = detail["installation"]["id"]
        assert as_b.delete(f"/api/marketplace/installations/{installation}").status_code == 409
        as_b.post(f"/api/deployments/{deployed.json()['id']}/pause")
        gone = as_b.delete(f"/api/marketplace/installations/{installation}")
        assert gone.status_code == 200 and gone.json()["id"] == installation
        assert as_b.get(f"/api/marketplace/templates/{slug}").json()["listing"]["install_count"] == 0


@pytest.mark.parametrize(
    ("overrides", "status", "fragment"),
    [
        pytest.param({"category": "poetry"}, 422, "category", id="unknown-category"),
        pytest.param({"price_usd_micros": 2_000_000}, 400, "$1.00", id="per-use-above-a-dollar"),
        pytest.param({"price_usd_micros": 5_000}, 400, "price_usd_micros", id="per-use-below-a-cent"),
        pytest.param({"pricing_model": "free"}, 400, "a free template costs 0", id="free-with-a-price"),
        pytest.param({"config_schema": {"type": 7}}, 400, "not a valid JSON Schema", id="bad-schema"),
        pytest.param({"tags": ["Not A Tag"]}, 422, "tags", id="bad-tag"),
        pytest.param({"slug": "taken"}, 409, "exists", id="duplicate-slug"),
    ],
)
def test_bad_publications_are_refused_and_write_nothing(
    market: Mesh, overrides: dict[str, object], status: int, fragment: str
) -> None:
    a = f"a-{uuid.uuid4().hex[:6]}"
    with market.as_key(market.tenant_with_key(a)) as as_a:
        taken = f"{a}-taken"
        _publish(as_a, taken)
        slug = taken if overrides.get("slug") == "taken" else f"{a}-new"
        body = {**_publish_body(slug), **{k: v for k, v in overrides.items() if k != "slug"}}
        r = as_a.post("/api/marketplace/templates", json=body)
        assert r.status_code == status, r.text
        assert fragment in r.text
        listed = as_a.get("/api/marketplace/templates", params={"tag": "hipaa", "page_size": 100}).json()
        assert [x["slug"] for x in listed["items"] if x["slug"].startswith(a)] == [taken]


def _publish_body(slug: str) -> dict[str, object]:
    return {
        "slug": slug,
        "agent_type": "security",
        "name": "HIPAA",
        "category": "domain",
        "tags": ["hipaa"],
        "visibility": "public",
        "pricing_model": "per_use",
        "price_usd_micros": 50_000,
        "config_schema": SCHEMA,
        "prompt": SECRET,
    }


def test_every_marketplace_route_hides_private_listings_and_paid_prompts(market: Mesh) -> None:
    """B (a per-use installer, which has not bought the prompt) and C (a
    stranger) call every marketplace route, and the template routes, against
    A's listings: private ones are 404, and no response carries a paid prompt."""
    a, b, c = (f"{p}-{uuid.uuid4().hex[:6]}" for p in "abc")
    key_a, key_b, key_c = (market.tenant_with_key(t) for t in (a, b, c))
    exercised: set[tuple[str, str]] = set()
    with market.as_key(key_a) as as_a, market.as_key(key_b) as as_b, market.as_key(key_c) as as_c:
        paid = _publish(as_a, f"{a}-paid")
        private = _publish(
            as_a, f"{a}-private", visibility="private", pricing_model="free", price_usd_micros=0
        )
        unlisted = _publish(as_a, f"{a}-unlisted", visibility="unlisted")
        assert (
            as_b.post(
                f"/api/marketplace/templates/{paid['slug']}/install", json={"config": {"strict": True}}
            ).status_code
            == 201
        )
        mine = as_b.get(f"/api/marketplace/templates/{paid['slug']}").json()["installation"]["id"]

        def seen(client: httpx.Client, method: str, route: str, path: str, **kw: object) -> httpx.Response:
            exercised.add((method, route))
            r = client.request(method, path, **kw)  # type: ignore[arg-type]
            assert r.status_code < 500, r.text
            assert "HIPAA checklist" not in r.text, f"{method} {path} leaked the paid prompt"
            return r

        def hidden(client: httpx.Client, method: str, route: str, path: str, **kw: object) -> None:
            r = seen(client, method, route, path, **kw)
            assert r.status_code == 404, f"{method} {path}: {r.status_code} {r.text}"
            assert r.json()["error"]["status"] == "NOT_FOUND"

        for client in (as_b, as_c):
            for params in ({}, {"q": "hipaa"}, {"tag": "hipaa"}, {"category": "domain", "sort": "recent"}):
                listed = seen(
                    client, "GET", "/api/marketplace/templates", "/api/marketplace/templates", params=params
                )
                slugs = {x["slug"] for x in listed.json()["items"]}
                assert paid["slug"] in slugs and not slugs & {private["slug"], unlisted["slug"]}
            for listing in (paid, unlisted):
                detail = seen(
                    client,
                    "GET",
                    "/api/marketplace/templates/{template}",
                    f"/api/marketplace/templates/{listing['slug']}",
                )
                assert detail.status_code == 200 and detail.json()["prompt"] is None
            hidden(
                client,
                "GET",
                "/api/marketplace/templates/{template}",
                f"/api/marketplace/templates/{private['slug']}",
            )
            hidden(
                client,
                "POST",
                "/api/marketplace/templates/{slug}/install",
                f"/api/marketplace/templates/{private['slug']}/install",
                json={"config": {}},
            )
            hidden(
                client,
                "POST",
                "/api/marketplace/templates/{listing_id}/reviews",
                f"/api/marketplace/templates/{private['id']}/reviews",
                json={"rating": 5},
            )
            for listing in (paid, private):
                hidden(
                    client,
                    "PUT",
                    "/api/marketplace/templates/{template}",
                    f"/api/marketplace/templates/{listing['id']}",
                    json={"name": "pwned", "category": "domain", "version": {"prompt": "pwned"}},
                )
            # The template routes: a stranger sees nothing, the per-use installer no prompt.
            template = seen(client, "GET", "/api/templates/{slug}", f"/api/templates/{paid['slug']}")
            if client is as_c:
                assert template.status_code == 404
            else:
                assert [v["prompt"] for v in template.json()["versions"]] == [""]
        # C uninstalling B's installation, C reviewing what it did not install.
        hidden(
            as_c,
            "DELETE",
            "/api/marketplace/installations/{installation_id}",
            f"/api/marketplace/installations/{mine}",
        )
        refused = seen(
            as_c,
            "POST",
            "/api/marketplace/templates/{listing_id}/reviews",
            f"/api/marketplace/templates/{paid['id']}/reviews",
            json={"rating": 1},
        )
        assert refused.status_code == 409 and "install" in refused.text
        # Installing and reviewing answer without the prompt too.
        installed = seen(
            as_c,
            "POST",
            "/api/marketplace/templates/{slug}/install",
            f"/api/marketplace/templates/{unlisted['slug']}/install",
            json={"config": {"strict": False}},
        )
        assert installed.status_code == 201
        seen(
            as_b,
            "POST",
            "/api/marketplace/templates/{listing_id}/reviews",
            f"/api/marketplace/templates/{paid['id']}/reviews",
            json={"rating": 2},
        )
        seen(
            as_b,
            "POST",
            "/api/marketplace/templates",
            "/api/marketplace/templates",
            json={**_publish_body(f"{b}-own"), "prompt": "mine"},
        )
        seen(
            as_b,
            "DELETE",
            "/api/marketplace/installations/{installation_id}",
            f"/api/marketplace/installations/{mine}",
        )
        # Nothing of A's changed, and A still reads its own prompt.
        own = as_a.get(f"/api/marketplace/templates/{paid['slug']}").json()
        assert own["prompt"] == SECRET and own["listing"]["name"] == "HIPAA Compliance"
        assert as_a.get(f"/api/marketplace/templates/{private['slug']}").status_code == 200
    assert routes_tagged(market, {"marketplace"}) - exercised == set(), "marketplace routes not walked"
