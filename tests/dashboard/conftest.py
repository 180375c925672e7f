"""A real mesh, agent processes and Debian's chromium driven by Playwright.

Browsers are never downloaded (`playwright install` is not run): the tests
use /usr/bin/chromium (scripts/host-packages.sh installs it). Every run saves
a full-page screenshot of each page under build/screenshots/.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import Browser, Page, sync_playwright

from tests.dashboard.browser import ROOT
from tests.support.mesh import Mesh, run_mesh

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """One mesh per module on SQLite; each test uses its own tenants."""
    tmp = tmp_path_factory.mktemp("mesh")
    with pytest.MonkeyPatch.context() as env:
        # Ticketing reads its marketplace key from the environment at start.
        env.setenv("SWARM_TICKETING_MARKETPLACE_KEY", Fernet.generate_key().decode())
        yield from run_mesh(
            f"sqlite:///{tmp / 'quota.db'}",
            f"sqlite:///{tmp / 'ticketing.db'}",
            f"sqlite:///{tmp / 'events.db'}",
            f"sqlite:///{tmp / 'telemetry.db'}",
        )


# Per module, not per session: Playwright's sync API keeps its event loop
# running on this thread while it is open, and later test files in the same
# process (pyroute2's netlink calls) then find "This event loop is already running".
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run scripts/host-packages.sh as root"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    p = context.new_page()
    p.set_default_timeout(20_000)
    yield p
    context.close()


@pytest.fixture
def start_agent(mesh: Mesh) -> Iterator[object]:
    """Starts `python -m swarmagent.agent` for a tenant, exporting spans to the mesh's telemetry."""
    procs: list[subprocess.Popen[bytes]] = []
    settings = mesh.app.state.settings

    def start(tenant: str, agent_id: str = "coder-1") -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{settings.telemetry_target}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "swarmagent.agent", "--ticketing", settings.ticketing_target,
                "--tenant", tenant, "--agent-id", agent_id, "--work", "tests.dashboard.work:steady",
            ],
            env=env,
            cwd=ROOT,
        )  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
