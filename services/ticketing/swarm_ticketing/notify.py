"""Waking parked pollers when tickets become ready: in this process once the
transaction committed, and in every other ticketing process on the same
PostgreSQL database through LISTEN/NOTIFY.

The commit hook sends at most one NOTIFY per transaction, on one channel,
saying what became ready (`{"origin": …, "ready": [[tenant, project, role,
count], …]}`): NOTIFY takes a database-wide lock at commit, so one per ticket
would cap everyone's ticket rate. A payload over PostgreSQL's limit says
`"all"` instead, and every poller looks. Delivery is best effort: after the
listener (re)connects, every parked poller looks once, and parked pollers
recheck the database on their own now and then (swarm_ticketing.longpoll).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Connection

from swarm_ticketing.matching import ParkedPollers
from swarm_ticketing.stores.ready import ReadyKey, counted
from swarmcommon.db import Notes

log = logging.getLogger(__name__)

# One channel per schema: deployments (and tests) sharing a database in
# separate schemas do not wake each other. PostgreSQL cuts names at 63 bytes.
CHANNEL_PREFIX = "swarm_ready:"
# PostgreSQL refuses payloads of 8,000 bytes or more.
MAX_PAYLOAD = 7_900
_NOTIFY = sa.text(f"SELECT pg_notify(left('{CHANNEL_PREFIX}' || current_schema(), 63), :payload)")


def payload(origin: str, ready: Counter[ReadyKey]) -> str:
    text = json.dumps({"origin": origin, "ready": [[*key, n] for key, n in ready.items()]})
    if len(text.encode()) > MAX_PAYLOAD:
        return json.dumps({"origin": origin, "all": True})
    return text


class ReadySignal:
    """The database's commit hook: NOTIFY inside the transaction (PostgreSQL
    delivers it only if it commits), local wakes after the commit."""

    def __init__(self, pollers: ParkedPollers, *, postgres: bool, origin: str) -> None:
        self.pollers = pollers
        self.postgres = postgres
        self.origin = origin

    def before_commit(self, conn: Connection, notes: Notes) -> None:
        ready = counted(notes)
        if self.postgres and ready:
            conn.execute(_NOTIFY, {"payload": payload(self.origin, ready)})

    def after_commit(self, notes: Notes) -> None:
        ready = counted(notes)
        if ready:
            self.pollers.wake_threadsafe(ready)


def new_origin() -> str:
    return uuid.uuid4().hex[:16]


class ReadyListener:
    """LISTENs on its own connection and wakes this process's pollers for
    tickets other processes made ready."""

    def __init__(self, database_url: str, pollers: ParkedPollers, origin: str) -> None:
        url = sa.engine.make_url(database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._pollers = pollers
        self._origin = origin
        self._stop = threading.Event()
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticket-ready-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    schema = conn.execute("SELECT current_schema()").fetchone()
                    channel = f"{CHANNEL_PREFIX}{schema[0] if schema else ''}"[:63]
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    # Whatever was announced while we were not listening: look again.
                    self._pollers.wake_all_threadsafe()
                    self.listening.set()
                    backoff = 0.1
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.1):
                            self._deliver(note.payload)
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning(
                    "ticket-ready listener lost its connection; reconnecting", extra={"error": str(exc)}
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _deliver(self, text: str) -> None:
        try:
            message = json.loads(text)
            if message.get("origin") == self._origin:
                return  # our own commit: woken locally already
            if message.get("all"):
                self._pollers.wake_all_threadsafe()
                return
            ready = Counter({ReadyKey(t, p, r): int(n) for t, p, r, n in message["ready"]})
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignored a malformed ticket-ready notification", extra={"payload": text[:200]})
            return
        self._pollers.wake_threadsafe(ready)
