"""What the browser tests share: signing in, tenants, screenshots."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.sync_api import Page

from tests.support.mesh import Mesh

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, base_url: str, key: str) -> None:
    page.goto(f"{base_url}/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/projects")


def new_tenant(mesh: Mesh, prefix: str) -> tuple[str, str]:
    tenant = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return tenant, mesh.tenant_with_key(tenant)
