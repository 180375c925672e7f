"""A token-checking mesh per test (see mesh.py); vmhost makes a bridge, so root.

`backend` picks SQLite (the default) or PostgreSQL (`BACKENDS` below); each
service gets its own database (SQLite file or PostgreSQL schema)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import sqlalchemy as sa

from tests.agenttokens.mesh import AgentMesh, start_mesh

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.fail("the agent-token tests start vmhost, which makes a bridge: run them as root", pytrace=False)

SERVICES = ("ticketing", "telemetry", "vmhost")


@pytest.fixture
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield {s: f"sqlite:///{tmp_path / f'{s}.db'}" for s in SERVICES}
        return
    assert backend == "postgres", backend
    base = request.getfixturevalue("postgres_url")
    libpq = sa.engine.make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    schemas = {s: f"t_{uuid.uuid4().hex[:16]}" for s in SERVICES}
    try:
        admin = psycopg.connect(libpq, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for this test and is unreachable at {base}: {exc}")
    with admin:
        sep = "&" if "?" in base else "?"
        for schema in schemas.values():
            admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield {
                s: f"{base}{sep}options={quote(f'-csearch_path={schema}')}" for s, schema in schemas.items()
            }
        finally:
            for schema in schemas.values():
                admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def mesh(urls: dict[str, str], tmp_path: Path) -> Iterator[AgentMesh]:
    m = start_mesh(urls, tmp_path)
    try:
        yield m
    finally:
        m.stop()
