"""What every service's migrations must do, on SQLite and PostgreSQL alike:
build exactly the schema its code uses from an empty database, run again as
a no-op, and go down and up again."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from swarmcommon import migrations
from swarmcommon.db import create_engine


def tables(url: str) -> set[str]:
    engine = create_engine(url, pool_size=1)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def assert_migrations_build_the_models(
    url: str,
    migrate: Callable[[str], None],
    metadata: sa.MetaData,
    version_table: str,
    expression_indexes: Collection[tuple[str, str]] = (),
    unmodelled: Collection[str] = (),
) -> None:
    """`expression_indexes`: (table, index) pairs Alembic cannot reflect;
    they are checked by name instead of compared. `unmodelled`: names of
    what migrations build and SQLAlchemy does not model (an FTS5 table and
    its shadow tables, a full-text index), left out of the comparison."""
    skipped = {name for _, name in expression_indexes} | set(unmodelled)
    assert tables(url) == set()
    migrate(url)
    assert tables(url) - set(unmodelled) == {t.name for t in metadata.sorted_tables} | {version_table}
    engine = create_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "version_table": version_table,
                    "include_object": lambda obj, name, type_, reflected, compare_to: name not in skipped,
                },
            )
            assert compare_metadata(ctx, metadata) == []
            for table, index in expression_indexes:
                assert index in {ix["name"] for ix in sa.inspect(conn).get_indexes(table)}
    finally:
        engine.dispose()


def assert_migrations_are_idempotent_and_reversible(
    url: str, migrate: Callable[[str], None], script_location: Path, version_table: str
) -> None:
    migrate(url)
    migrate(url)  # a second start finds nothing to do
    migrations.downgrade(url, script_location, version_table)
    assert tables(url) == {version_table}
    migrate(url)
    assert len(tables(url)) > 1
