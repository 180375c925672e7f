"""Token-guarded lease transitions: renew (heartbeat), start, submit, fail,
release, release-all-of-an-agent, and the reaper. The claim itself lives in
`claims.py`; failure accounting in `failures.py`.

Every transition here needs the ticket's current claim token: it locks the
ticket row only if the token is current and the lease unexpired, and
otherwise explains why in a FAILED_PRECONDITION without writing anything.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from swarm_ticketing import failures, journal, merge_requests
from swarm_ticketing import statements as stmt
from swarm_ticketing.claims import ClaimRequest, Claims
from swarm_ticketing.domain import (
    LEASE_EXPIRED_REASON,
    ActorType,
    Claim,
    EventType,
    FailureOutcome,
    Lease,
    LeasePolicy,
    ReleasedClaims,
    Ticket,
    TicketState,
)
from swarm_ticketing.journal import AuditEntry
from swarm_ticketing.rows import CLEARED_LEASE, to_ticket
from swarm_ticketing.store import ticket_not_found
from swarm_ticketing.tables import claim_requests, tickets
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition

T = tickets
_LEASED = stmt.LEASED
_INSERT_CLAIM_REQUEST = sa.insert(claim_requests)


class LeaseManager:
    def __init__(self, db: Database, clock: Clock, policy: LeasePolicy) -> None:
        self.db = db
        self.clock = clock
        self.policy = policy
        self.claims = Claims(db, clock, policy)

    def claim(self, req: ClaimRequest) -> Claim | None:
        return self.claims.claim(req)

    # -- token-guarded transitions -------------------------------------------

    def _lock_leased(
        self,
        conn: Connection,
        tenant_id: str,
        ticket_id: str,
        token: str,
        now: datetime,
        resubmit_ok: bool = False,
    ) -> Row[Any]:
        """The ticket row, locked, if `token` holds its live lease; else explain.

        With `resubmit_ok`, the row is also returned when `token` is the lease
        whose submission already succeeded, so a retried submit can be answered.
        """
        row = conn.execute(stmt.LOCK_TICKET, {"tenant": tenant_id, "ticket_id": ticket_id}).first()
        if row is None:
            raise ticket_not_found(ticket_id)
        if resubmit_ok and row.last_submitted_token == token:
            return row
        if row.state not in _LEASED:
            raise FailedPrecondition(
                f"ticket {ticket_id} is {row.state} and holds no lease; claim it first",
                reason="LEASE_NOT_HELD",
                ticket_id=ticket_id,
                state=row.state,
            )
        if row.claim_token != token:
            raise FailedPrecondition(
                f"ticket {ticket_id} is claimed by another agent "
                f"(lease expires {row.claim_expires_at:%Y-%m-%dT%H:%M:%SZ})",
                reason="STALE_CLAIM_TOKEN",
                ticket_id=ticket_id,
            )
        if row.claim_expires_at <= now:
            raise FailedPrecondition(
                f"lease on ticket {ticket_id} expired at {row.claim_expires_at:%Y-%m-%dT%H:%M:%SZ}",
                reason="LEASE_EXPIRED",
                ticket_id=ticket_id,
            )
        return row

    def renew(self, tenant_id: str, ticket_id: str, token: str, lease: timedelta | None) -> Lease:
        def tx(conn: Connection) -> Lease:
            now = self.clock.now()
            row = self._lock_leased(conn, tenant_id, ticket_id, token, now)
            expires = now + (lease or self.policy.default_lease)
            # Heartbeats are not transitions: no audit row, no event.
            conn.execute(sa.update(T).where(T.c.id == ticket_id).values(claim_expires_at=expires))
            return Lease(token, row.claimed_by_agent_id, expires)

        return self.db.transaction(tx)

    def start(self, tenant_id: str, ticket_id: str, token: str) -> Ticket:
        def tx(conn: Connection) -> Ticket:
            now = self.clock.now()
            row = self._lock_leased(conn, tenant_id, ticket_id, token, now)
            if row.state == TicketState.IN_PROGRESS:
                return to_ticket(row)  # a retried StartWork
            ticket = stmt.update_ticket(
                conn, ticket_id, {"state": TicketState.IN_PROGRESS.value, "updated_at": now}
            )
            journal.record(
                conn,
                now,
                [failures.transition_audit(row, "in_progress", ActorType.AGENT, row.claimed_by_agent_id)],
                [journal.ticket_event(EventType.IN_PROGRESS, ticket, agent_id=row.claimed_by_agent_id)],
            )
            return ticket

        return self.db.transaction(tx)

    def submit(
        self, tenant_id: str, ticket_id: str, token: str, result_json: str
    ) -> tuple[Ticket, list[str]]:
        def tx(conn: Connection) -> tuple[Ticket, list[str]]:
            now = self.clock.now()
            row = self._lock_leased(conn, tenant_id, ticket_id, token, now, resubmit_ok=True)
            if row.last_submitted_token == token:
                return to_ticket(row), []  # a retried SubmitWork that already succeeded
            agent = row.claimed_by_agent_id
            stages = row.stages.split(",")
            next_index = row.stage_index + 1
            common: dict[str, Any] = {
                **CLEARED_LEASE,
                "result_json": result_json,
                "last_submitted_token": token,
                "updated_at": now,
            }
            merge_requests.after_submit(
                conn, row, result_json, stages[next_index] if next_index < len(stages) else None, now
            )
            if next_index < len(stages):
                ticket = stmt.update_ticket(
                    conn,
                    ticket_id,
                    {
                        **common,
                        "state": TicketState.READY.value,
                        "stage_index": next_index,
                        "role": stages[next_index],
                    },
                )
                journal.record(
                    conn,
                    now,
                    [
                        failures.transition_audit(
                            row,
                            "stage_complete",
                            ActorType.AGENT,
                            agent,
                            stage=row.role,
                        )
                    ],
                    [
                        journal.ticket_event(
                            EventType.STAGE_COMPLETE,
                            ticket,
                            completed_stage=row.role,
                            next_stage=stages[next_index],
                            agent_id=agent,
                        )
                    ],
                )
                return ticket, []
            ticket = stmt.update_ticket(conn, ticket_id, {**common, "state": TicketState.DONE.value})
            unblocked = self._unblock_dependents(conn, ticket_id, now) if row.child_count else []
            duration = (now - row.created_at).total_seconds()
            journal.record(
                conn,
                now,
                [
                    failures.transition_audit(row, "completed", ActorType.AGENT, agent),
                    *(
                        AuditEntry(
                            tenant_id,
                            child,
                            "unblocked",
                            ActorType.SYSTEM,
                            new_value={"state": "ready"},
                        )
                        for child in unblocked
                    ),
                ],
                [
                    journal.ticket_event(
                        EventType.COMPLETED,
                        ticket,
                        agent_id=agent,
                        duration_seconds=round(duration, 3),
                    )
                ],
            )
            return ticket, unblocked

        return self.db.transaction(tx)

    @staticmethod
    def _unblock_dependents(conn: Connection, parent_id: str, now: datetime) -> list[str]:
        """Count one parent done on each child; children at zero become READY."""
        rows = conn.execute(stmt.UNBLOCK_CHILDREN, {"parent": parent_id, "now": now}).all()
        return sorted(r.id for r in rows if r.state == TicketState.READY)

    def fail(
        self, tenant_id: str, ticket_id: str, token: str, reason: str, details_json: str
    ) -> FailureOutcome:
        def tx(conn: Connection) -> FailureOutcome:
            now = self.clock.now()
            row = self._lock_leased(conn, tenant_id, ticket_id, token, now)
            rejected = merge_requests.after_failure(conn, row, reason, details_json, now)
            outcome = failures.record_failure(
                conn,
                row,
                now,
                reason,
                self.policy.max_failures,
                actor=ActorType.AGENT,
                actor_id=row.claimed_by_agent_id,
                details_json=details_json,
            )
            if rejected and not outcome.quarantined and row.stage_index > 0:
                # A rejected review goes back to its author for rework.
                back = row.stage_index - 1
                stages = row.stages.split(",")
                ticket = stmt.update_ticket(conn, ticket_id, {"stage_index": back, "role": stages[back]})
                return FailureOutcome(ticket, False)
            return outcome

        return self.db.transaction(tx)

    def release(self, tenant_id: str, ticket_id: str, token: str) -> Ticket:
        def tx(conn: Connection) -> Ticket:
            now = self.clock.now()
            row = self._lock_leased(conn, tenant_id, ticket_id, token, now)
            ticket = stmt.update_ticket(
                conn, ticket_id, {**CLEARED_LEASE, "state": TicketState.READY.value, "updated_at": now}
            )
            journal.record(
                conn,
                now,
                [failures.transition_audit(row, "released", ActorType.AGENT, row.claimed_by_agent_id)],
            )
            return ticket

        return self.db.transaction(tx)

    def release_agent(self, tenant_id: str, agent_id: str, reason: str) -> ReleasedClaims:
        """Self-healing: every live lease of a vanished agent counts a failure."""

        def tx(conn: Connection) -> ReleasedClaims:
            now = self.clock.now()
            rows = conn.execute(
                sa.select(T)
                .where(
                    T.c.tenant_id == tenant_id,
                    T.c.claimed_by_agent_id == agent_id,
                    T.c.state.in_(_LEASED),
                )
                .order_by(T.c.id)
                .with_for_update()
            ).all()
            result = ReleasedClaims()
            why = f"agent {agent_id} lost: {reason}" if reason else f"agent {agent_id} lost"
            for row in rows:
                outcome = failures.record_failure(
                    conn, row, now, why, self.policy.max_failures, actor=ActorType.SYSTEM
                )
                (result.quarantined if outcome.quarantined else result.released).append(row.id)
            return result

        return self.db.transaction(tx)

    def reap_expired(self, batch: int = 200) -> ReleasedClaims:
        """Safety net: expired leases nobody rescued go back to READY (or quarantine)."""

        def tx(conn: Connection) -> ReleasedClaims:
            now = self.clock.now()
            rows = conn.execute(
                sa.select(T)
                .where(T.c.state.in_(_LEASED), T.c.claim_expires_at < now)
                .order_by(T.c.claim_expires_at)
                .limit(batch)
                .with_for_update(skip_locked=True)
            ).all()
            result = ReleasedClaims()
            for row in rows:
                outcome = failures.record_failure(
                    conn, row, now, LEASE_EXPIRED_REASON, self.policy.max_failures, actor=ActorType.SYSTEM
                )
                (result.quarantined if outcome.quarantined else result.released).append(row.id)
            return result

        return self.db.transaction(tx)
