"""Shared fixtures: storage backends, real ticketing, quota and telemetry
servers, and a webhook receiver (helpers live in tests/support).

Backends: every repository/concurrency test is parametrized over SQLite and
PostgreSQL. PostgreSQL comes from SWARM_TEST_POSTGRES_URL, else a
testcontainers server when a Docker engine answers, else the local server at
127.0.0.1:5432. Each test gets its own schema, dropped afterwards. A test
that cannot reach PostgreSQL fails; it never skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.harness import (
    QuotaHarness,
    TelemetryHarness,
    TicketingHarness,
    start_quota,
    start_telemetry,
    start_ticketing,
)
from tests.support.receivers import Receiver, serve_receiver

LOCAL_POSTGRES = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test"

# Services started by behaviour tests run in insecure dev mode (plaintext,
# every caller trusted) unless the test hands them certificates: the
# security tests (tests/security, the mesh and the demo) run real mutual TLS
# and authorization; the rest test what a service does once a call is let in.
# Many services run in one process (and on one machine): each serves its
# /metrics on a free port, not all on 9464.
for _service in ("TICKETING", "QUOTA", "EVENTS", "TELEMETRY", "VMHOST", "GATEWAY"):
    os.environ.setdefault(f"SWARM_{_service}_INSECURE_DEV", "true")
    os.environ.setdefault(f"SWARM_{_service}_METRICS_PORT", "0")


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get("SWARM_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver="psycopg") as pg:
            yield pg.get_connection_url()
        return
    yield LOCAL_POSTGRES


def _libpq(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for the backend named by the test's parameter."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'swarm.db'}"
        return
    assert backend == "postgres", backend
    base = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        admin = psycopg.connect(_libpq(base), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for this test and is unreachable at {base}: {exc}")
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def spans() -> InMemorySpanExporter:
    """Every span this test process finishes (the global provider is set once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.fail("another test installed a global tracer provider first")
    return exporter


@pytest.fixture
def ticketing(db: str) -> Iterator[TicketingHarness]:
    """A real ticketing gRPC server on an ephemeral port, on `db`, with a manual clock."""
    harness = start_ticketing(db)
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def quota(db: str) -> Iterator[QuotaHarness]:
    """A real quota gRPC server on an ephemeral port, on `db`, with a manual clock."""
    harness = start_quota(db)
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def telemetry(db: str) -> Iterator[TelemetryHarness]:
    """A real telemetry server (TelemetryService + OTLP) on `db`."""
    harness = start_telemetry(db)
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real local HTTP endpoint that records webhook deliveries."""
    with serve_receiver() as rec:
        yield rec
