"""Alembic migrations build exactly the schema the code uses, from empty, on both backends."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from swarm_quota.server import MIGRATIONS, migrate
from swarm_quota.tables import VERSION_TABLE, metadata
from swarmcommon import migrations
from swarmcommon.db import create_engine
from tests.conftest import BACKENDS

pytestmark = BACKENDS


def _tables(url: str) -> set[str]:
    engine = create_engine(url, pool_size=1)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _comparable(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    return True


def test_migrations_run_from_empty_and_match_the_models(db: str) -> None:
    assert _tables(db) == set()
    migrate(db)
    assert _tables(db) == {t.name for t in metadata.sorted_tables} | {VERSION_TABLE}
    engine = create_engine(db, pool_size=1)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "include_object": _comparable}
            )
            diff = compare_metadata(ctx, metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_migrations_are_idempotent_and_reversible(db: str) -> None:
    migrate(db)
    migrate(db)  # a second start finds nothing to do
    migrations.downgrade(db, MIGRATIONS, VERSION_TABLE)
    assert _tables(db) == {VERSION_TABLE}
    migrate(db)
    assert "counters" in _tables(db)
