"""Telemetry's migrations, from empty, on both backends."""

from __future__ import annotations

import sqlalchemy as sa

from swarm_telemetry.server import MIGRATIONS, migrate
from swarm_telemetry.tables import VERSION_TABLE, metadata
from swarmcommon import migrations
from swarmcommon.db import create_engine
from tests.support.harness import BACKENDS
from tests.support.migrations import (
    assert_migrations_are_idempotent_and_reversible,
    assert_migrations_build_the_models,
)

pytestmark = BACKENDS


def test_migrations_run_from_empty_and_match_the_models(db: str) -> None:
    assert_migrations_build_the_models(db, migrate, metadata, VERSION_TABLE)


def test_migrations_are_idempotent_and_reversible(db: str) -> None:
    assert_migrations_are_idempotent_and_reversible(db, migrate, MIGRATIONS, VERSION_TABLE)


def test_stored_span_kinds_and_statuses_keep_their_meaning_across_0002(db: str) -> None:
    """0002 turns OTLP's numbers into the domain's names (NULL for
    unspecified / unset) and back again on downgrade."""
    migrations.upgrade(db, MIGRATIONS, VERSION_TABLE, "0001")
    engine = create_engine(db, pool_size=1)
    try:
        with engine.begin() as conn:
            for span_id, kind, status in (("a", 2, 1), ("b", 3, 2), ("c", 0, 0)):
                conn.execute(
                    sa.text(
                        "INSERT INTO spans (trace_id, span_id, parent_span_id, name, kind, status, "
                        "status_message, start_ns, end_ns, attributes, events, service_name, tenant_id, "
                        "ticket_id, agent_id, received_at) VALUES ('t', :span_id, '', 'n', :kind, :status, "
                        "'', 1, 2, '{}', '[]', '', 'acme', 'x', '', CURRENT_TIMESTAMP)"
                    ),
                    {"span_id": span_id, "kind": kind, "status": status},
                )
        migrate(db)
        named = [("a", "server", "ok"), ("b", "client", "error"), ("c", None, None)]
        assert _kinds_and_statuses(engine) == named
        migrations.downgrade(db, MIGRATIONS, VERSION_TABLE, "0001")
        assert _kinds_and_statuses(engine) == [("a", 2, 1), ("b", 3, 2), ("c", 0, 0)]
    finally:
        engine.dispose()


def _kinds_and_statuses(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT span_id, kind, status FROM spans ORDER BY span_id")).all()
    return [tuple(r) for r in rows]
