"""Templates and canary deployments, snapshots and the marketplace in a real browser."""

from __future__ import annotations

import uuid

from playwright.sync_api import Page, expect

from tests.dashboard.browser import new_tenant, shoot, sign_in
from tests.support.mesh import Mesh


def test_a_canary_is_promoted_then_rolled_back(mesh: Mesh, page: Page) -> None:
    tenant, key = new_tenant(mesh, "canary")
    api = mesh.as_key(key)
    slug = f"{tenant}-coder"
    assert (
        api.post("/api/templates", json={"slug": slug, "agent_type": "coder", "name": "Coder"}).status_code
        == 201
    )
    for n in (1, 2):
        assert api.post(f"/api/templates/{slug}/versions", json={"prompt": f"prompt v{n}"}).status_code == 201
    assert (
        api.post("/api/deployments", json={"slug": slug, "version": 1, "rollout_percent": 100}).status_code
        == 201
    )
    canary = api.post(
        "/api/deployments", json={"slug": slug, "version": 2, "rollout_percent": 20, "ladder": [20, 50, 100]}
    ).json()
    sign_in(page, mesh.base_url, key)
    page.get_by_role("link", name="Templates").click()
    page.get_by_label("Slug").fill(slug)
    page.get_by_role("button", name="Show template").click()
    expect(page.get_by_role("cell", name="v2", exact=True)).to_be_visible()
    page.get_by_label("Deployment id").fill(canary["id"])
    page.get_by_role("button", name="Show deployment").click()
    deployment = page.get_by_test_id("deployment")
    expect(deployment).to_contain_text("20% of tickets")
    expect(deployment).to_contain_text("Failure rate")
    page.get_by_role("button", name="Promote").click()
    expect(page.get_by_role("status")).to_have_text("Promoted.")
    expect(page.get_by_test_id("deployment")).to_contain_text("50% of tickets")
    assert api.get(f"/api/deployments/{canary['id']}").json()["rollout_percent"] == 50
    shoot(page, "templates")
    page.get_by_role("button", name="Roll back").click()
    expect(page.get_by_role("status")).to_have_text("Rolled back.")
    expect(page.get_by_test_id("deployment")).to_contain_text("rollback")
    assert api.get(f"/api/deployments/{canary['id']}").json()["status"] == "rollback"


def test_a_listing_is_installed_and_reviewed(mesh: Mesh, page: Page) -> None:
    author, author_key = new_tenant(mesh, "author")
    _, key = new_tenant(mesh, "buyer")
    slug = f"{author}-lint-{uuid.uuid4().hex[:4]}"
    body = {
        "slug": slug, "agent_type": "reviewer", "name": "Strict Linter", "description": "Reviews style",
        "category": "review", "visibility": "public", "prompt": "review strictly",
    }  # fmt: skip
    r = mesh.as_key(author_key).post("/api/marketplace/templates", json=body)
    assert r.status_code == 201, r.text
    sign_in(page, mesh.base_url, key)
    page.get_by_role("link", name="Marketplace").click()
    page.get_by_label("Search").fill("Strict Linter")
    page.get_by_role("button", name="Search", exact=True).click()
    card = page.get_by_test_id("listing").filter(has_text="Strict Linter")
    expect(card).to_contain_text("0 installs")
    card.get_by_role("button", name="Install Strict Linter").click()
    expect(page.get_by_role("status")).to_have_text("Installed.")
    card = page.get_by_test_id("listing").filter(has_text="Strict Linter")
    expect(card).to_contain_text("1 installs")
    card.get_by_text("Write a review").click()
    card.get_by_label("Rating").select_option("4")
    card.get_by_label("Title").fill("Useful")
    card.get_by_role("button", name="Submit review").click()
    expect(page.get_by_role("status")).to_contain_text("review saved")
    expect(page.get_by_test_id("listing").filter(has_text="Strict Linter")).to_contain_text("4.0★ (1)")
    shoot(page, "marketplace")


def test_snapshots_page_lists_the_tenants_projects(mesh: Mesh, page: Page) -> None:
    _, key = new_tenant(mesh, "snap")
    r = mesh.as_key(key).post(
        "/api/projects", json={"name": "no-repo", "tickets": [{"key": "a", "name": "A"}]}
    )
    assert r.status_code == 201, r.text
    sign_in(page, mesh.base_url, key)
    page.get_by_role("link", name="Snapshots").click()
    page.get_by_label("Project").select_option(label="no-repo")
    page.get_by_role("button", name="Show snapshots").click()
    expect(page.get_by_text("No snapshots")).to_be_visible()
    shoot(page, "snapshots")
