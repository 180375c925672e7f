"""Sessions: bad keys, tenant isolation, CSRF, sign-out."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from tests.dashboard.browser import new_tenant, shoot, sign_in
from tests.support.mesh import Mesh


def _ticket_of(mesh: Mesh, key: str, name: str) -> dict[str, Any]:
    r = mesh.as_key(key).post("/api/projects", json={"name": name, "tickets": [{"key": "a", "name": name}]})
    assert r.status_code == 201, r.text
    ticket: dict[str, Any] = r.json()["tickets"][0]
    return ticket


def test_a_bad_key_gets_a_login_error_and_no_session(mesh: Mesh, page: Page) -> None:
    page.goto(f"{mesh.base_url}/")
    page.wait_for_url(f"{mesh.base_url}/login")
    page.get_by_label("API key").fill("sk_not-a-real-key")
    with page.expect_response(f"{mesh.base_url}/login") as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    expect(page.get_by_test_id("login-error")).to_contain_text("not valid")
    assert not [c for c in page.context.cookies() if c["name"] == "swarm_session"]
    shoot(page, "login")


def test_tenant_b_never_sees_tenant_a(mesh: Mesh, page: Page) -> None:
    _, key_a = new_tenant(mesh, "alpha")
    tenant_b, key_b = new_tenant(mesh, "beta")
    secret = _ticket_of(mesh, key_a, "alpha-secret-project")
    _ticket_of(mesh, key_b, "beta-own-project")
    sign_in(page, mesh.base_url, key_b)
    expect(page.get_by_test_id("tenant")).to_have_text(tenant_b)
    expect(page.get_by_role("link", name="beta-own-project")).to_be_visible()
    for path in ("/projects", "/tickets", "/dead-letters", "/webhooks"):
        page.goto(f"{mesh.base_url}{path}")
        assert "alpha-secret-project" not in page.content(), path
    answer = page.goto(f"{mesh.base_url}/tickets/{secret['id']}")
    assert answer is not None and answer.status == 404
    expect(page.get_by_test_id("error")).to_be_visible()
    assert "alpha-secret-project" not in page.content()
    answer = page.goto(f"{mesh.base_url}/projects/{secret['project_id']}")
    assert answer is not None and answer.status == 404


def test_a_form_without_the_csrf_token_is_refused(mesh: Mesh, page: Page) -> None:
    _, key = new_tenant(mesh, "gamma")
    ticket = _ticket_of(mesh, key, "gamma-project")
    sign_in(page, mesh.base_url, key)
    # The session cookie goes with these requests (same browser context).
    retry = f"{mesh.base_url}/dead-letters/{ticket['id']}/retry"
    missing = page.request.post(retry, form={"reason": "x"}, max_redirects=0)
    assert missing.status == 403, missing.status
    forged = page.request.post(retry, form={"csrf": "forged", "reason": "x"}, max_redirects=0)
    assert forged.status == 403
    edit = page.request.post(
        f"{mesh.base_url}/dead-letters/{ticket['id']}/edit", form={"description": "hacked"}, max_redirects=0
    )
    assert edit.status == 403
    assert mesh.as_key(key).get(f"/api/tickets/{ticket['id']}").json()["description"] == ""
    # Signing out (a CSRF-checked form) ends the session.
    page.goto(f"{mesh.base_url}/projects")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{mesh.base_url}/login")
    page.goto(f"{mesh.base_url}/projects")
    page.wait_for_url(f"{mesh.base_url}/login")


def test_a_revoked_key_ends_the_session(mesh: Mesh, page: Page) -> None:
    tenant, key = new_tenant(mesh, "delta")
    sign_in(page, mesh.base_url, key)
    keys = mesh.admin("GET", f"/admin/tenants/{tenant}/api-keys").json()["items"]
    for k in keys:
        r = mesh.admin("DELETE", f"/admin/tenants/{tenant}/api-keys/{k['id']}")
        assert r.status_code in (200, 204), r.text
    page.goto(f"{mesh.base_url}/projects")
    page.wait_for_url(f"{mesh.base_url}/login")
