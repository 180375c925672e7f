"""The gateway in front of a real local mesh (see tests/support/mesh.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mesh import Mesh, run_mesh


@pytest.fixture
def mesh(db: str, tmp_path: Path) -> Iterator[Mesh]:
    """Ticketing on the parametrized backend; quota and events on SQLite beside it."""
    yield from run_mesh(
        f"sqlite:///{tmp_path / 'quota.db'}",
        db,
        f"sqlite:///{tmp_path / 'events.db'}",
        f"sqlite:///{tmp_path / 'telemetry.db'}",
        repository_root=tmp_path / "repos",
    )
