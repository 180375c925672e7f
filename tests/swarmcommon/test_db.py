"""The engine factory and transaction discipline shared by every service."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from swarmcommon import db as dbmod
from swarmcommon.db import Database, UTCDateTime
from swarmcommon.errors import Unavailable
from tests.support.harness import BACKENDS


def _locked() -> OperationalError:
    return OperationalError("UPDATE x", {}, sqlite3.OperationalError("database is locked"))


def test_sqlite_pragmas_are_set(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite:///{tmp_path / 'p.db'}")
    with database.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == dbmod.SQLITE_BUSY_TIMEOUT_MS
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    database.dispose()


def test_busy_errors_are_retried_then_become_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbmod, "BACKOFF_BASE_SECONDS", 0.0001)
    database = Database.from_url(f"sqlite:///{tmp_path / 'r.db'}")
    calls = {"n": 0}

    def flaky(conn: sa.Connection) -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise _locked()
        return "ok"

    assert database.transaction(flaky) == "ok"
    assert calls["n"] == 3

    def always_locked(conn: sa.Connection) -> None:
        raise _locked()

    with pytest.raises(Unavailable):
        database.transaction(always_locked)
    database.dispose()


def test_non_transient_errors_are_not_retried(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite:///{tmp_path / 'n.db'}")
    calls = {"n": 0}

    def broken(conn: sa.Connection) -> None:
        calls["n"] += 1
        conn.exec_driver_sql("SELECT * FROM no_such_table")

    with pytest.raises(OperationalError):
        database.transaction(broken)
    assert calls["n"] == 1
    database.dispose()


def test_sqlite_writers_in_separate_engines_never_lose_updates(tmp_path: Path) -> None:
    """Read-modify-write from 8 engines (as from 8 processes): BEGIN IMMEDIATE
    serializes them, so no increment is lost and no busy error escapes."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    setup = Database.from_url(url)
    setup.transaction(lambda c: c.exec_driver_sql("CREATE TABLE counter (n INTEGER)"))
    setup.transaction(lambda c: c.exec_driver_sql("INSERT INTO counter VALUES (0)"))
    engines = [Database.from_url(url, pool_size=2) for _ in range(8)]
    errors: list[BaseException] = []

    def bump(conn: sa.Connection) -> None:
        n = conn.exec_driver_sql("SELECT n FROM counter").scalar_one()
        conn.exec_driver_sql(f"UPDATE counter SET n = {n + 1}")

    def worker(database: Database) -> None:
        try:
            for _ in range(50):
                database.transaction(bump)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (
        setup.transaction(lambda c: c.exec_driver_sql("SELECT n FROM counter").scalar_one(), write=False)
        == 400
    )
    for e in [setup, *engines]:
        e.dispose()


@BACKENDS
def test_utc_datetimes_round_trip_on_both_backends(db: str) -> None:
    database = Database.from_url(db)
    meta = sa.MetaData()
    table = sa.Table(
        "times", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("at", UTCDateTime)
    )
    database.transaction(lambda c: meta.create_all(c))
    plus_two = datetime(2031, 5, 6, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    database.transaction(lambda c: c.execute(sa.insert(table), [{"id": 1, "at": plus_two}]))
    got = database.transaction(lambda c: c.execute(sa.select(table.c.at)).scalar_one(), write=False)
    assert got == plus_two and got.tzinfo == UTC
    later = database.transaction(
        lambda c: c.execute(
            sa.select(table.c.id).where(table.c.at < datetime(2031, 5, 6, 8, tzinfo=UTC))
        ).all(),
        write=False,
    )
    assert later == [(1,)]  # 07:30Z is before 08:00Z: compared as times, not text
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        database.transaction(lambda c: c.execute(sa.insert(table), [{"id": 2, "at": datetime(2031, 1, 1)}]))  # noqa: DTZ001
    database.dispose()


class _Hook:
    """Writes inside the transaction, then fails after the commit."""

    def __init__(self) -> None:
        self.after: list[dict[str, object]] = []

    def before_commit(self, conn: sa.engine.Connection, notes: dbmod.Notes) -> None:
        conn.execute(sa.text("INSERT INTO hooked (note) VALUES (:n)"), {"n": str(notes["topic"])})

    def after_commit(self, notes: dbmod.Notes) -> None:
        self.after.append(dict(notes))
        raise RuntimeError("event loop is closed")


def test_commit_hooks_write_with_the_transaction_and_cannot_fail_it_after(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite:///{tmp_path / 'h.db'}")
    database.transaction(lambda c: c.execute(sa.text("CREATE TABLE hooked (note TEXT)")))
    hook = _Hook()
    database.add_commit_hook(hook)

    def noted(conn: sa.engine.Connection) -> str:
        dbmod.notes(conn)["topic"] = "ready"
        return "done"

    # The hook's after-commit failure is logged: the committed transaction's answer stands.
    assert database.transaction(noted) == "done"
    assert hook.after == [{"topic": "ready"}]
    # A transaction that left no notes does not run the hooks.
    assert database.transaction(lambda c: "quiet") == "quiet"
    assert hook.after == [{"topic": "ready"}]
    rows = database.transaction(lambda c: c.execute(sa.text("SELECT note FROM hooked")).all(), write=False)
    assert [tuple(r) for r in rows] == [("ready",)]
    database.dispose()


def test_unsupported_database_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        dbmod.create_engine("mysql://x")
