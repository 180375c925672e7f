"""Projects, dead letters and traces in a real browser against a real mesh with a real agent."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from playwright.sync_api import Page, expect

from tests.dashboard.browser import new_tenant, shoot, sign_in
from tests.dashboard.work import POISON
from tests.support.mesh import Mesh
from tests.support.waiting import eventually


def _project(mesh: Mesh, key: str) -> dict[str, Any]:
    body = {
        "name": "webapp",
        "tickets": [
            {"key": "schema", "name": "Database schema", "description": "tables"},
            {"key": "api", "name": "REST API", "description": "routes", "depends_on": ["schema"]},
            {"key": "ui", "name": "Web UI", "description": "pages", "depends_on": ["api"]},
            {"key": "poison", "name": "Login form", "description": f"form\n{POISON}\n"},
        ],
    }
    r = mesh.as_key(key).post("/api/projects", json=body)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def _reload_until(page: Page, check: Callable[[], bool], what: str, timeout: float = 45) -> None:
    def reloaded() -> bool:
        page.reload()
        return check()

    eventually(reloaded, timeout=timeout, interval=0.5, what=what)


def test_a_dead_letter_is_fixed_and_retried_and_the_project_finishes_live(
    mesh: Mesh, page: Page, start_agent: Callable[[str], object]
) -> None:
    tenant, key = new_tenant(mesh, "acme")
    created = _project(mesh, key)
    project_id = created["project"]["id"]
    ids = {t["name"]: t["id"] for t in created["tickets"]}
    sign_in(page, mesh.base_url, key)
    expect(page.get_by_test_id("tenant")).to_have_text(tenant)
    expect(page.get_by_role("link", name="webapp")).to_be_visible()
    start_agent(tenant)

    # The poisoned ticket fails three times and lands in the queue.
    page.get_by_role("link", name="Dead letters").click()
    _reload_until(page, lambda: page.get_by_test_id("dead-letter-row").count() == 1, "the dead letter")
    row = page.get_by_test_id("dead-letter-row")
    expect(row).to_contain_text("Login form")
    expect(row).to_contain_text("Failed 3 times")
    shoot(page, "dead-letters")

    # Review: the failure history, then fix the spec and retry.
    row.get_by_role("link", name="Review").click()
    expect(page.get_by_role("heading", name=re.compile("Login form"))).to_be_visible()
    assert page.get_by_test_id("failure-row").count() >= 3
    page.get_by_label("Description").fill("form, spec fixed")
    page.get_by_label("Priority").fill("5")
    page.get_by_label("Reason").first.fill("removed the broken line")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    expect(page.get_by_label("Description")).to_have_value("form, spec fixed")
    shoot(page, "dead-letter-review")

    # A second tab shows the project; it updates by itself (live events),
    # never reloaded, while the retried ticket runs.
    watcher = page.context.new_page()
    watcher.goto(f"{mesh.base_url}/projects/{project_id}")
    expect(watcher.locator("body[data-live='open']")).to_have_count(1)
    expect(watcher.get_by_test_id("progress-percent")).to_have_text("75%")
    page.goto(f"{mesh.base_url}/dead-letters")
    page.get_by_role("button", name="Retry Login form").click()
    expect(page.get_by_role("status")).to_contain_text("Redriven")
    expect(page.get_by_test_id("dead-letter-row")).to_have_count(0)
    expect(page.get_by_test_id("no-dead-letters")).to_be_visible()

    expect(watcher.get_by_test_id("progress-percent")).to_have_text("100%", timeout=30_000)
    assert int(watcher.evaluate("document.body.dataset.refreshed")) >= 1
    watcher.close()
    page.goto(f"{mesh.base_url}/projects/{project_id}")
    expect(page.get_by_test_id("eta")).to_have_text("Done")
    expect(page.locator(".dag .node")).to_have_count(4)
    shoot(page, "project")
    page.goto(f"{mesh.base_url}/projects")
    expect(page.get_by_test_id("percent")).to_have_text("100%")
    shoot(page, "projects")

    # A ticket's audit trail and its trace waterfall (the agent's spans reach telemetry over OTLP).
    page.goto(f"{mesh.base_url}/tickets/{ids['REST API']}")
    expect(page.get_by_role("heading", name=re.compile("REST API"))).to_be_visible()
    assert page.get_by_test_id("audit-row").count() >= 2
    _reload_until(
        page,
        lambda: "git.push" in (page.get_by_test_id("waterfall").all_inner_texts() or [""])[0],
        "the trace's spans",
    )
    waterfall = page.get_by_test_id("waterfall")
    expect(waterfall).to_contain_text("agent.work")
    expect(waterfall).to_contain_text("llm.generate_code")
    shoot(page, "ticket")
    page.goto(f"{mesh.base_url}/tickets")
    shoot(page, "tickets")
