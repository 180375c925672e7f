"""The `swarm` command against a real local mesh (tests/support/mesh.py):
a real gateway over HTTP in front of real quota, events, telemetry and
ticketing servers, all on SQLite under the test's tmp_path."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.runner import Swarm
from tests.support.mesh import ADMIN_TOKEN, Mesh, run_mesh


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    yield from run_mesh(
        f"sqlite:///{tmp_path / 'quota.db'}",
        f"sqlite:///{tmp_path / 'ticketing.db'}",
        f"sqlite:///{tmp_path / 'events.db'}",
        f"sqlite:///{tmp_path / 'telemetry.db'}",
        repository_root=tmp_path / "repos",
    )


@pytest.fixture
def swarm(mesh: Mesh, tmp_path: Path) -> Swarm:
    """The CLI as a fresh tenant (pro plan) holding its API key, and the operator."""
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    key = mesh.tenant_with_key(tenant)
    return Swarm(mesh.base_url, tenant, key, ADMIN_TOKEN, config_home=tmp_path / "config-home")
