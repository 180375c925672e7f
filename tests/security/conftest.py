"""The security tests' mesh: one PKI for the session (issue_mesh, an agent
signing key, a foreign CA) and real services with mutual TLS, started once
per module (helpers in tests/support/pki.py and tests/support/secure.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pki import MeshPki, make_mesh_pki
from tests.support.secure import SecureService, start_secure

SERVED = ("quota", "ticketing", "events", "telemetry", "vmhost")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> MeshPki:
    return make_mesh_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def servers(pki: MeshPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SecureService]]:
    """Every gRPC service of the mesh, started lazily, stopped after the module."""
    workdir = tmp_path_factory.mktemp("servers")

    class Lazy(dict[str, SecureService]):
        def __missing__(self, name: str) -> SecureService:
            if name not in SERVED:
                raise KeyError(name)
            self[name] = start_secure(name, pki, Path(workdir) / name)
            return self[name]

    started = Lazy()
    try:
        yield started
    finally:
        for service in started.values():
            service.stop()
