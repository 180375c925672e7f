"""Ticketing's migrations, from empty, on both backends."""

from __future__ import annotations

from swarm_ticketing.server import MIGRATIONS, migrate
from swarm_ticketing.tables import VERSION_TABLE, metadata
from tests.support.harness import BACKENDS
from tests.support.migrations import (
    assert_migrations_are_idempotent_and_reversible,
    assert_migrations_build_the_models,
)

pytestmark = BACKENDS


def test_migrations_run_from_empty_and_match_the_models(db: str) -> None:
    # The claim path's partial index orders by priority DESC: an expression index.
    assert_migrations_build_the_models(
        db,
        migrate,
        metadata,
        VERSION_TABLE,
        expression_indexes=[("tickets", "ix_tickets_claimable")],
        # Learnings' full-text search (see learning_tables.py).
        unmodelled=[f"learnings_fts{suffix}" for suffix in ("", "_data", "_idx", "_docsize", "_config")]
        + ["ix_learnings_fts"],
    )


def test_migrations_are_idempotent_and_reversible(db: str) -> None:
    assert_migrations_are_idempotent_and_reversible(db, migrate, MIGRATIONS, VERSION_TABLE)
