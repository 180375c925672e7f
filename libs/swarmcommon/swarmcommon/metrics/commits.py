"""Counting what a transaction did, once it committed.

A counter bumped inside `Database.transaction(fn)` counts twice when the
transaction is retried (SQLITE_BUSY, a serialization failure) and counts
what a rollback undid. `count_on_commit(conn, counter)` leaves a note
instead (swarmcommon.db's transaction notes); the `CountAfterCommit` hook,
added to the service's Database, counts the notes after the commit.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter
from sqlalchemy.engine import Connection

from swarmcommon.db import Notes, notes

TOPIC = "metrics"


def count_on_commit(conn: Connection, *counters: Counter) -> None:
    """Count each of `counters` once when `conn`'s transaction commits."""
    if counters:
        pending: list[Counter] = notes(conn).setdefault(TOPIC, [])
        pending.extend(counters)


class CountAfterCommit:
    """The commit hook: `db.add_commit_hook(CountAfterCommit())`."""

    def before_commit(self, conn: Connection, notes: Notes) -> None:
        """Nothing to do inside the transaction."""

    def after_commit(self, notes: Notes) -> None:
        counters: list[Any] = notes.get(TOPIC, [])
        for counter in counters:
            counter.inc()
