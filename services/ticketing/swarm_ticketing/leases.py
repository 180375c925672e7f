"""Leased claims: claim, renew, start, submit, fail, release, and the reaper.

The claim is the hot path. Each attempt is ONE statement: a locking subquery
picks the best candidate (highest priority, then oldest) and feeds an
`UPDATE … RETURNING`. On PostgreSQL the subquery is `FOR UPDATE SKIP LOCKED`,
so concurrent claimers step over each other's rows instead of queueing; on
SQLite the write transaction is BEGIN IMMEDIATE, so there is one writer.

A ticket whose lease expired is claimable again from the claim path itself
(the "rescue" attempt, tried first so abandoned work does not wait behind
new work); the reaper is the slow safety net for tickets nobody claims.
Either way the lost lease counts as a failure.

Every other transition needs the ticket's current claim token: it locks the
ticket row only if the token is current and the lease unexpired, and
otherwise explains why in a FAILED_PRECONDITION without writing anything.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from swarm_ticketing import journal
from swarm_ticketing import statements as stmt
from swarm_ticketing.domain import (
    DEFAULT_LEASE,
    DEFAULT_MAX_FAILURES,
    LEASE_EXPIRED_REASON,
    ActorType,
    AgentRole,
    Claim,
    EventType,
    FailureOutcome,
    Lease,
    ReleasedClaims,
    Ticket,
    TicketState,
    quarantine_reason,
)
from swarm_ticketing.journal import AuditEntry
from swarm_ticketing.rows import CLEARED_LEASE, to_ticket
from swarm_ticketing.store import ticket_not_found
from swarm_ticketing.tables import claim_requests, tickets
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition
from swarmcommon.outbox import OutboxEvent

T = tickets
_LEASED = stmt.LEASED
_INSERT_CLAIM_REQUEST = sa.insert(claim_requests)


@dataclass(frozen=True)
class LeasePolicy:
    default_lease: timedelta = DEFAULT_LEASE
    max_failures: int = DEFAULT_MAX_FAILURES


@dataclass(frozen=True)
class ClaimRequest:
    tenant_id: str
    agent_id: str
    role: AgentRole | None = None
    project_id: str | None = None
    request_id: str | None = None
    lease: timedelta | None = None


class LeaseManager:
    def __init__(self, db: Database, clock: Clock, policy: LeasePolicy) -> None:
        self.db = db
        self.clock = clock
        self.policy = policy

    # -- claim --------------------------------------------------------------

    def claim(self, req: ClaimRequest) -> Claim | None:
        """Lease the best claimable ticket to an agent, or None if there is none."""
        try:
            return self.db.transaction(lambda conn: self._claim(conn, req))
        except IntegrityError:
            # Another call with the same (agent, request_id) committed first:
            # our claim rolled back; answer with the lease that call got.
            replay = self.db.transaction(lambda conn: self._replay(conn, req), write=False)
            if replay is None:
                raise
            return replay

    def _claim(self, conn: Connection, req: ClaimRequest) -> Claim | None:
        # Idempotency is optimistic, to keep the hot path short: a repeated
        # (agent, request_id) is caught by the claim_requests primary key at
        # insert time, this transaction rolls back, and claim() replays.
        now = self.clock.now()
        token = str(uuid.uuid4())
        expires = now + (req.lease or self.policy.default_lease)
        params: dict[str, Any] = {
            "tenant": req.tenant_id,
            "token": token,
            "expires": expires,
            "agent": req.agent_id,
            "now": now,
        }
        if req.role is not None:
            params["p_role"] = req.role.value
        if req.project_id is not None:
            params["p_project"] = req.project_id
        shape = (req.role is not None, req.project_id is not None)
        audit: list[AuditEntry] = []
        events: list[OutboxEvent] = []

        row = conn.execute(stmt.claim_ready(*shape), params).first()
        rescued = None
        if row is None:
            rescued = conn.execute(
                stmt.expired_candidate(*shape), {**params, "max_failures": self.policy.max_failures}
            ).first()
            if rescued is None:
                return self._replay(conn, req) if req.request_id else None
            row = conn.execute(
                stmt.RESCUE, {**params, "ticket_id": rescued.id, "reason": LEASE_EXPIRED_REASON}
            ).one()
            audit.append(
                _failure_audit(
                    row.tenant_id,
                    row.id,
                    rescued.state,
                    rescued.claimed_by_agent_id,
                    row.failure_count,
                    LEASE_EXPIRED_REASON,
                )
            )

        ticket = to_ticket(row)
        if rescued is not None:
            events.append(
                journal.ticket_event(
                    EventType.FAILED,
                    ticket,
                    reason=LEASE_EXPIRED_REASON,
                    agent_id=rescued.claimed_by_agent_id,
                )
            )
        lease = Lease(token, req.agent_id, expires)
        if req.request_id:
            conn.execute(
                _INSERT_CLAIM_REQUEST,
                {
                    "tenant_id": req.tenant_id,
                    "agent_id": req.agent_id,
                    "request_id": req.request_id,
                    "ticket_id": ticket.id,
                    "claim_token": token,
                    "expires_at": expires,
                    "created_at": now,
                },
            )
        audit.append(
            AuditEntry(
                req.tenant_id,
                ticket.id,
                "assigned",
                ActorType.AGENT,
                actor_id=req.agent_id,
                new_value={
                    "stage": ticket.current_role.value,
                    "lease_expires_at": expires,
                },
            )
        )
        events.append(
            journal.ticket_event(
                EventType.ASSIGNED,
                ticket,
                agent_id=req.agent_id,
                lease_expires_at=expires,
            )
        )
        journal.record(conn, now, audit, events)
        return Claim(ticket, lease)

    def _replay(self, conn: Connection, req: ClaimRequest) -> Claim | None:
        c = claim_requests
        prior = conn.execute(
            sa.select(c).where(
                c.c.tenant_id == req.tenant_id,
                c.c.agent_id == req.agent_id,
                c.c.request_id == req.request_id,
            )
        ).first()
        if prior is None:
            return None
        row = conn.execute(sa.select(T).where(T.c.id == prior.ticket_id)).one()
        return Claim(
            to_ticket(row),
            Lease(prior.claim_token, req.agent_id, prior.expires_at),
        )

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

    def _update(self, conn: Connection, ticket_id: str, **values: Any) -> Ticket:
        row = conn.execute(*stmt.update_ticket(ticket_id, values)).one()
        return to_ticket(row)

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
            ticket = self._update(conn, ticket_id, state=TicketState.IN_PROGRESS.value, updated_at=now)
            journal.record(
                conn,
                now,
                [self._transition_audit(row, "in_progress", ActorType.AGENT, row.claimed_by_agent_id)],
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
            if next_index < len(stages):
                ticket = self._update(
                    conn,
                    ticket_id,
                    **common,
                    state=TicketState.READY.value,
                    stage_index=next_index,
                    role=stages[next_index],
                )
                journal.record(
                    conn,
                    now,
                    [
                        self._transition_audit(
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
            ticket = self._update(conn, ticket_id, **common, state=TicketState.DONE.value)
            unblocked = self._unblock_dependents(conn, ticket_id, now) if row.child_count else []
            duration = (now - row.created_at).total_seconds()
            journal.record(
                conn,
                now,
                [
                    self._transition_audit(row, "completed", ActorType.AGENT, agent),
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
            return self._record_failure(conn, row, now, reason, row.claimed_by_agent_id, details_json)

        return self.db.transaction(tx)

    def release(self, tenant_id: str, ticket_id: str, token: str) -> Ticket:
        def tx(conn: Connection) -> Ticket:
            now = self.clock.now()
            row = self._lock_leased(conn, tenant_id, ticket_id, token, now)
            ticket = self._update(
                conn,
                ticket_id,
                **CLEARED_LEASE,
                state=TicketState.READY.value,
                updated_at=now,
            )
            journal.record(
                conn,
                now,
                [self._transition_audit(row, "released", ActorType.AGENT, row.claimed_by_agent_id)],
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
                outcome = self._record_failure(conn, row, now, why, None, None, actor=ActorType.SYSTEM)
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
                outcome = self._record_failure(
                    conn,
                    row,
                    now,
                    LEASE_EXPIRED_REASON,
                    None,
                    None,
                    actor=ActorType.SYSTEM,
                )
                (result.quarantined if outcome.quarantined else result.released).append(row.id)
            return result

        return self.db.transaction(tx)

    # -- failures -------------------------------------------------------------

    def _record_failure(
        self,
        conn: Connection,
        row: Row[Any],
        now: datetime,
        reason: str,
        agent_id: str | None,
        details_json: str | None,
        actor: ActorType = ActorType.AGENT,
    ) -> FailureOutcome:
        count = row.failure_count + 1
        quarantined = count >= self.policy.max_failures
        values: dict[str, Any] = {
            **CLEARED_LEASE,
            "failure_count": count,
            "last_failure_at": now,
            "last_failure_reason": reason,
            "updated_at": now,
            "state": (TicketState.QUARANTINED if quarantined else TicketState.READY).value,
        }
        if quarantined:
            values["quarantined_at"] = now
            values["quarantine_reason"] = quarantine_reason(count, reason)
        ticket = self._update(conn, row.id, **values)
        audit = [
            _failure_audit(
                row.tenant_id,
                row.id,
                row.state,
                row.claimed_by_agent_id,
                count,
                reason,
                actor,
                agent_id,
            )
        ]
        events = [
            journal.ticket_event(
                EventType.FAILED,
                ticket,
                reason=reason,
                agent_id=row.claimed_by_agent_id,
                details=details_json,
            )
        ]
        if quarantined:
            audit.append(
                AuditEntry(
                    row.tenant_id,
                    row.id,
                    "quarantined",
                    ActorType.SYSTEM,
                    old_value={"state": row.state},
                    new_value={"state": "quarantined", "failure_count": count},
                    rationale=values["quarantine_reason"],
                )
            )
            events.append(
                journal.ticket_event(EventType.QUARANTINED, ticket, reason=values["quarantine_reason"])
            )
        journal.record(conn, now, audit, events)
        return FailureOutcome(ticket, quarantined)

    @staticmethod
    def _transition_audit(
        row: Row[Any],
        event_type: str,
        actor: ActorType,
        actor_id: str | None,
        **extra: Any,
    ) -> AuditEntry:
        return AuditEntry(
            row.tenant_id,
            row.id,
            event_type,
            actor,
            actor_id=actor_id,
            old_value={"state": row.state},
            new_value=extra or None,
        )


def _failure_audit(
    tenant_id: str,
    ticket_id: str,
    old_state: str,
    holder: str | None,
    failure_count: int,
    reason: str,
    actor: ActorType = ActorType.SYSTEM,
    actor_id: str | None = None,
) -> AuditEntry:
    return AuditEntry(
        tenant_id,
        ticket_id,
        "failure_recorded",
        actor,
        actor_id=actor_id,
        old_value={"state": old_state, "agent_id": holder},
        new_value={"failure_count": failure_count},
        rationale=reason,
    )
