"""Webhooks (with a real local receiver), usage and agents in a real browser."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.dashboard.browser import new_tenant, shoot, sign_in
from tests.support.mesh import Mesh
from tests.support.receivers import serve_receiver


def test_a_webhook_is_added_tested_and_its_delivery_logged(mesh: Mesh, page: Page) -> None:
    _, key = new_tenant(mesh, "hooks")
    sign_in(page, mesh.base_url, key)
    with serve_receiver() as receiver:
        page.get_by_role("link", name="Webhooks").click()
        page.get_by_label("URL").fill(receiver.url)
        page.get_by_label("Event types").fill("ticket.completed webhook.test")
        page.get_by_label("Description").fill("local receiver")
        page.get_by_role("button", name="Add webhook").click()
        expect(page.get_by_test_id("webhook-created")).to_contain_text(receiver.url)
        expect(page.get_by_test_id("webhook-secret")).to_contain_text("whsec_")
        shoot(page, "webhooks")

        page.get_by_role("link", name=receiver.url).click()
        page.get_by_role("button", name="Send test event").click()
        expect(page.get_by_test_id("test-result")).to_contain_text("succeeded (HTTP 200)")
        receiver.wait_for(1)
        assert receiver.bodies_with("webhook.test")
        row = page.get_by_test_id("attempt-row")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("webhook.test")
        expect(row).to_contain_text("succeeded")
        shoot(page, "webhook")
        # Nobody else's webhook is listed, and the secret is never shown again.
        page.goto(f"{mesh.base_url}/webhooks")
        expect(page.get_by_test_id("webhook-row")).to_have_count(1)
        expect(page.get_by_test_id("webhook-secret")).to_have_count(0)


def test_usage_shows_quota_bars_and_cost_charts(mesh: Mesh, page: Page) -> None:
    _, key = new_tenant(mesh, "usage")
    sign_in(page, mesh.base_url, key)
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", name="Usage")).to_be_visible()
    rows = page.get_by_test_id("quota-row")
    assert rows.count() >= 3
    expect(page.get_by_text("api calls per hour")).to_be_visible()
    for title in ("Cost by project", "Cost by agent type", "Cost by day"):
        expect(page.get_by_role("heading", name=title)).to_be_visible()
    shoot(page, "usage")


def test_agents_page_says_when_the_agent_host_is_unreachable(mesh: Mesh, page: Page) -> None:
    # This mesh runs no vmhost: the page says so instead of failing.
    _, key = new_tenant(mesh, "agents")
    sign_in(page, mesh.base_url, key)
    page.get_by_role("link", name="Agents").click()
    expect(page.get_by_test_id("agents-error")).to_contain_text("did not answer", timeout=60_000)
    expect(page.get_by_role("heading", name="Healing log")).to_be_visible()
    shoot(page, "agents")
