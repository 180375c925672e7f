"""Retention: the event log, finished deliveries, their attempts and old
request ids are deleted after their retention period (rows in bounded
batches; request ids through the shared request log, all at once).

What is still on its way is never purged: a PENDING or DELIVERING delivery,
the event it will send and its earlier attempts all stay, however old.
Events are kept by arrival time, deliveries by their last change (a
redelivered one starts its period again), attempts and request ids by
their own time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_events.domain import FINISHED_STATUSES, LIVE_STATUSES
from swarm_events.stores.requests import LOG
from swarm_events.tables import deliveries, delivery_attempts, events
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.periodic import Periodic

log = logging.getLogger(__name__)
D, A, E = deliveries, delivery_attempts, events


@dataclass(frozen=True)
class RetentionPolicy:
    events: timedelta = timedelta(days=30)
    deliveries: timedelta = timedelta(days=30)
    request_ids: timedelta = timedelta(hours=24)
    # Rows deleted per statement: short transactions, no long locks.
    batch: int = 1000


class Retention(Periodic):
    name = "retention"

    def __init__(self, db: Database, clock: Clock, policy: RetentionPolicy, interval: float) -> None:
        super().__init__(interval)
        self.db = db
        self.clock = clock
        self.policy = policy

    def run_once(self) -> bool:
        """One batch of each kind; True while some kind had a full batch (more is waiting)."""
        now = self.clock.now()
        purged = {
            "attempts": self.db.transaction(lambda conn: self._attempts(conn, now - self.policy.deliveries)),
            "deliveries": self.db.transaction(
                lambda conn: self._deliveries(conn, now - self.policy.deliveries)
            ),
            "events": self.db.transaction(lambda conn: self._events(conn, now - self.policy.events)),
            "request_ids": self.db.transaction(
                lambda conn: self._requests(conn, now - self.policy.request_ids)
            ),
        }
        if any(purged.values()):
            log.info("retention purged old rows", extra=purged)
        return any(n >= self.policy.batch for n in purged.values())

    def _attempts(self, conn: Connection, before: datetime) -> int:
        live = sa.select(D.c.id).where(D.c.id == A.c.delivery_id, D.c.status.in_(LIVE_STATUSES))
        doomed = sa.select(A.c.seq).where(A.c.created_at < before, ~sa.exists(live)).limit(self.policy.batch)
        return _delete(conn, sa.delete(A).where(A.c.seq.in_(doomed)))

    def _deliveries(self, conn: Connection, before: datetime) -> int:
        doomed = (
            sa.select(D.c.id)
            .where(D.c.status.in_(FINISHED_STATUSES), D.c.updated_at < before)
            .limit(self.policy.batch)
        )
        return _delete(conn, sa.delete(D).where(D.c.id.in_(doomed)))

    def _events(self, conn: Connection, before: datetime) -> int:
        live = sa.select(D.c.id).where(D.c.event_id == E.c.event_id, D.c.status.in_(LIVE_STATUSES))
        doomed = sa.select(E.c.seq).where(E.c.received_at < before, ~sa.exists(live)).limit(self.policy.batch)
        return _delete(conn, sa.delete(E).where(E.c.seq.in_(doomed)))

    def _requests(self, conn: Connection, before: datetime) -> int:
        return LOG.forget(conn, before)


def _delete(conn: Connection, statement: sa.Delete) -> int:
    return int(conn.execute(statement).rowcount)
