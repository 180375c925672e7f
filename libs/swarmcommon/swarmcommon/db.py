"""Database engines chosen by URL, with the same transaction semantics on both.

SQLite (embedded default): WAL, busy_timeout, synchronous=NORMAL. SQLite has a
single writer; a deferred transaction that later writes can fail with
SQLITE_BUSY no matter how long it waits, so every write transaction starts
with BEGIN IMMEDIATE and, inside one process, writers queue on a lock instead
of spinning on the database file.

PostgreSQL: psycopg 3 behind SQLAlchemy's connection pool, READ COMMITTED;
claims rely on FOR UPDATE SKIP LOCKED rather than stronger isolation.

Both: `Database.transaction(fn)` retries a whole transaction a bounded number
of times, with jittered exponential backoff, on the transient errors each
backend can raise (SQLITE_BUSY, serialization failure, deadlock). If the
retries run out the caller gets `Unavailable`, which clients may retry.

A transaction can leave notes (`notes(conn)`) for the database's commit hooks:
ticketing notes the tickets that became claimable, and its hook sends one
NOTIFY just before the commit and wakes the process's parked pollers after it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from swarmcommon.errors import Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 5000
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 0.005
BACKOFF_CAP_SECONDS = 0.5

# SQLSTATEs PostgreSQL uses for "try the transaction again".
_PG_RETRYABLE = {"40001", "40P01", "55P03"}


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends.

    PostgreSQL stores TIMESTAMPTZ. SQLite has no time zones: values are stored
    as naive UTC text in a fixed-width format, so text comparison in SQL is
    time comparison.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.DateTime(timezone=True))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime passed to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, *, pool_size: int = 20) -> Engine:
    """An engine configured for Swarm's concurrency model on either backend."""
    if is_sqlite(url):
        return _create_sqlite_engine(url, pool_size)
    if url.startswith("postgresql"):
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return sa.create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            # No pre-ping: it costs a round trip per transaction on the claim
            # path. Connections are recycled instead, and a connection that
            # died anyway surfaces as a disconnect error the pool discards.
            pool_recycle=1800,
            pool_timeout=30,
        )
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql+psycopg://")


def _create_sqlite_engine(url: str, pool_size: int) -> Engine:
    path = sa.engine.make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={
            "check_same_thread": False,
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
        },
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the driver so BEGIN is ours.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("swarm_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def is_retryable(exc: BaseException) -> bool:
    """Whether a database error is transient and the transaction may be retried."""
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower()
        if "database is locked" in text or "database is busy" in text:
            return True
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if sqlstate in _PG_RETRYABLE:
            return True
    return False


# What a transaction noted for after its commit (see `notes`), by topic.
Notes = dict[str, Any]
_NOTES = "swarm_transaction_notes"


def notes(conn: Connection) -> Notes:
    """The notes of the transaction `conn` is in: what its commit hooks act on
    (a connection outside `Database.transaction` gets a dict nobody reads)."""
    found: Notes | None = conn.info.get(_NOTES)
    return found if found is not None else {}


class CommitHook(Protocol):
    """Acts on a transaction's notes: inside it just before its commit (on the
    same connection, so what it writes commits or rolls back with the rest),
    and once it committed."""

    def before_commit(self, conn: Connection, notes: Notes) -> None: ...

    def after_commit(self, notes: Notes) -> None: ...


class Database:
    """An engine plus the transaction discipline every repository uses."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # One writer at a time per process on SQLite: cheaper than letting
        # threads contend for the file lock through busy_timeout.
        self._writer = threading.Lock() if self.dialect == "sqlite" else None
        self._hooks: list[CommitHook] = []

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 20) -> Database:
        return cls(create_engine(url, pool_size=pool_size))

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def add_commit_hook(self, hook: CommitHook) -> None:
        """Run `hook` around the commit of every transaction that left notes."""
        self._hooks.append(hook)

    def transaction(self, fn: Callable[[Connection], T], *, write: bool = True) -> T:
        """Run `fn` in one transaction, retrying transient failures."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                notes: Notes = {}
                with self._begin(write) as conn:
                    conn.info[_NOTES] = notes
                    try:
                        result = fn(conn)
                        for hook in self._hooks if notes else ():
                            hook.before_commit(conn, notes)
                    finally:
                        conn.info.pop(_NOTES, None)
                self._after_commit(notes)
                return result
            except DBAPIError as exc:
                if not is_retryable(exc):
                    raise
                if attempt == MAX_ATTEMPTS:
                    log.warning("database busy after %d attempts", attempt)
                    raise Unavailable("database is busy; retry the request") from exc
                delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
                time.sleep(delay / 2 + random.uniform(0, delay / 2))
        raise AssertionError("unreachable")

    @contextmanager
    def _begin(self, write: bool) -> Iterator[Connection]:
        if self._writer is not None and write:
            with self._writer, self._connect(write) as conn, conn.begin():
                yield conn
        else:
            with self._connect(write) as conn, conn.begin():
                yield conn

    @contextmanager
    def _connect(self, write: bool) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn.execution_options(swarm_write=write)

    def _after_commit(self, notes: Notes) -> None:
        """Committed: a hook that fails now (a server shutting down) is logged;
        it cannot make the caller believe the transaction failed."""
        for hook in self._hooks if notes else ():
            try:
                hook.after_commit(notes)
            except Exception:  # noqa: BLE001 - the transaction's outcome is already decided
                log.exception("commit hook failed after the commit", extra={"hook": type(hook).__name__})

    def dispose(self) -> None:
        self.engine.dispose()
