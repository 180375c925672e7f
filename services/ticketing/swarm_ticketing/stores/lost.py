"""Leases lost without their holder's say: every lease of a vanished agent
(self-healing), expired leases nobody rescued, and stale leases whose agent
heartbeats without making progress (the reaper's passes). Each loss counts a
failure, which may quarantine the ticket."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from swarm_ticketing.domain import LEASE_EXPIRED_REASON, ActorType, LeasePolicy, ReleasedClaims
from swarm_ticketing.stores import failures, requests
from swarm_ticketing.stores import statements as stmt
from swarm_ticketing.tables import tickets
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.idempotency import Answer, RequestKey

T = tickets


class LostLeases:
    def __init__(self, db: Database, clock: Clock, policy: LeasePolicy) -> None:
        self.db = db
        self.clock = clock
        self.policy = policy

    def release_agent(
        self, tenant_id: str, agent_id: str, reason: str, key: RequestKey | None = None
    ) -> ReleasedClaims:
        """Self-healing: every live lease of a vanished agent counts a failure."""

        def work(conn: Connection, now: datetime) -> tuple[ReleasedClaims, Answer]:
            rows = conn.execute(
                sa.select(T)
                .where(
                    T.c.tenant_id == tenant_id,
                    T.c.claimed_by_agent_id == agent_id,
                    T.c.state.in_(stmt.LEASED),
                )
                .order_by(T.c.id)
                .with_for_update()
            ).all()
            why = f"agent {agent_id} lost: {reason}" if reason else f"agent {agent_id} lost"
            result = self._count_failures(conn, rows, now, why)
            return result, {"released": result.released, "quarantined": result.quarantined}

        def replay(conn: Connection, outcome: Answer) -> ReleasedClaims:
            return ReleasedClaims(list(outcome["released"]), list(outcome["quarantined"]))

        return requests.LOG.run(self.db, key, self.clock.now, work, replay)

    def reap_expired(self, batch: int = 200) -> ReleasedClaims:
        """Safety net: expired leases nobody rescued go back to READY (or quarantine)."""

        def tx(conn: Connection) -> ReleasedClaims:
            now = self.clock.now()
            rows = conn.execute(
                sa.select(T)
                .where(T.c.state.in_(stmt.LEASED), T.c.claim_expires_at < now)
                .order_by(T.c.claim_expires_at)
                .limit(batch)
                .with_for_update(skip_locked=True)
            ).all()
            return self._count_failures(conn, rows, now, LEASE_EXPIRED_REASON)

        return self.db.transaction(tx)

    def release_stale(self, deadline: timedelta, batch: int = 200) -> ReleasedClaims:
        """Leases whose work reported no progress for `deadline` while their
        agent kept them alive: a hung agent. Each goes back to READY (or to
        quarantine) with a failure counted; its agent's next heartbeat finds
        the lease gone and stops."""

        def tx(conn: Connection) -> ReleasedClaims:
            now = self.clock.now()
            last = sa.func.coalesce(T.c.progressed_at, T.c.claimed_at)
            rows = conn.execute(
                sa.select(T)
                .where(T.c.state.in_(stmt.LEASED), T.c.claim_expires_at >= now, last < now - deadline)
                .order_by(last)
                .limit(batch)
                .with_for_update(skip_locked=True)
            ).all()
            minutes = round(deadline.total_seconds() / 60, 1)
            why = f"stale: no progress for {minutes:g} min while its agent kept heartbeating"
            return self._count_failures(conn, rows, now, why)

        return self.db.transaction(tx)

    def _count_failures(
        self, conn: Connection, rows: Sequence[Row[Any]], now: datetime, reason: str
    ) -> ReleasedClaims:
        result = ReleasedClaims()
        for row in rows:
            outcome = failures.record_failure(
                conn, row, now, reason, self.policy.max_failures, actor=ActorType.SYSTEM
            )
            (result.quarantined if outcome.quarantined else result.released).append(row.id)
        return result
