"""Token-guarded lease transitions: renew (heartbeat), start, submit, fail and
release. The claim itself lives in `claims.py`, the loss of leases (a vanished
agent, the reaper) in `lost.py`, failure accounting in `failures.py`.

Every transition here needs the ticket's current claim token: it locks the
ticket row only if the token is current and the lease unexpired, and
otherwise explains why in a FAILED_PRECONDITION without writing anything.
An agent caller names itself as `holder`: the current token in the hands of
any other agent is PERMISSION_DENIED, again with nothing written.
With a request_id, a retry answers as the first call did (see `requests.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from swarm_ticketing.domain import (
    ActorType,
    AgentRole,
    AuditEvent,
    CollaborationPattern,
    EventType,
    FailureOutcome,
    Lease,
    LeasePolicy,
    Ticket,
    TicketState,
)
from swarm_ticketing.stores import (
    ensembles,
    failures,
    journal,
    learnings,
    merge_requests,
    milestones,
    ready,
    requests,
)
from swarm_ticketing.stores import statements as stmt
from swarm_ticketing.stores.cancels import cancel_leftovers
from swarm_ticketing.stores.journal import AuditEntry
from swarm_ticketing.stores.rows import CLEARED_LEASE, to_ticket
from swarm_ticketing.stores.stage_templates import StageTemplates
from swarm_ticketing.stores.tickets import load_ticket, lock_ticket
from swarm_ticketing.tables import tickets
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import FailedPrecondition, PermissionDenied
from swarmcommon.idempotency import Answer, RequestKey

T = tickets
_LEASED = stmt.LEASED


class LeaseManager:
    def __init__(
        self, db: Database, clock: Clock, policy: LeasePolicy, stages: StageTemplates | None = None
    ) -> None:
        self.db = db
        self.clock = clock
        self.policy = policy
        # Stage outcomes counted against the template version of the lease.
        self.stages = stages

    def _lock_leased(
        self,
        conn: Connection,
        tenant_id: str,
        ticket_id: str,
        token: str,
        now: datetime,
        resubmit_ok: bool = False,
        holder: str | None = None,
    ) -> Row[Any]:
        """The ticket row, locked, if `token` holds its live lease; else explain.

        With `resubmit_ok`, the row is also returned when `token` is the lease
        whose submission already succeeded, so a retried submit can be answered.
        """
        row = lock_ticket(conn, tenant_id, ticket_id)
        if resubmit_ok and row.last_submitted_token == token:
            return row
        if row.state == TicketState.CANCELLED:
            raise FailedPrecondition(
                f"ticket {ticket_id} was cancelled; stop working on it",
                reason="TICKET_CANCELLED",
                ticket_id=ticket_id,
            )
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
        if holder is not None and row.claimed_by_agent_id != holder:
            raise PermissionDenied(
                f"the lease on ticket {ticket_id} is held by another agent; an agent acts only on its own",
                reason="LEASE_HELD_BY_ANOTHER_AGENT",
                ticket_id=ticket_id,
            )
        if row.claim_expires_at <= now:
            raise FailedPrecondition(
                f"lease on ticket {ticket_id} expired at {row.claim_expires_at:%Y-%m-%dT%H:%M:%SZ}",
                reason="LEASE_EXPIRED",
                ticket_id=ticket_id,
            )
        return row

    def renew(
        self,
        tenant_id: str,
        ticket_id: str,
        token: str,
        lease: timedelta | None,
        key: RequestKey | None = None,
        *,
        holder: str | None = None,
        progress: int = 0,
    ) -> Lease:
        def work(conn: Connection, now: datetime) -> tuple[Lease, Answer]:
            row = self._lock_leased(conn, tenant_id, ticket_id, token, now, holder=holder)
            expires = now + (lease or self.policy.default_lease)
            # Heartbeats are not transitions: no audit row, no event. A rising
            # step count is progress (the stale check in lost.py).
            moved = (
                {"lease_progress": progress, "progressed_at": now}
                if progress > (row.lease_progress or 0)
                else {}
            )
            conn.execute(sa.update(T).where(T.c.id == ticket_id).values(claim_expires_at=expires, **moved))
            agent = row.claimed_by_agent_id
            return Lease(token, agent, expires), {"agent_id": agent, "expires_at": expires.isoformat()}

        def replay(conn: Connection, outcome: Answer) -> Lease:
            return Lease(token, outcome["agent_id"], datetime.fromisoformat(outcome["expires_at"]))

        return requests.LOG.run(self.db, key, self.clock.now, work, replay)

    def start(
        self,
        tenant_id: str,
        ticket_id: str,
        token: str,
        key: RequestKey | None = None,
        *,
        holder: str | None = None,
    ) -> Ticket:
        def work(conn: Connection, now: datetime) -> tuple[Ticket, Answer]:
            row = self._lock_leased(conn, tenant_id, ticket_id, token, now, holder=holder)
            if row.state == TicketState.IN_PROGRESS:
                return to_ticket(row), {}  # a retried StartWork without a request_id
            ticket = stmt.update_ticket(
                conn, ticket_id, {"state": TicketState.IN_PROGRESS.value, "updated_at": now}
            )
            journal.record(
                conn,
                now,
                [
                    failures.transition_audit(
                        row, AuditEvent.IN_PROGRESS, ActorType.AGENT, row.claimed_by_agent_id
                    )
                ],
                [journal.ticket_event(EventType.IN_PROGRESS, ticket, agent_id=row.claimed_by_agent_id)],
            )
            return ticket, {}

        return requests.LOG.run(self.db, key, self.clock.now, work, self._current(tenant_id, ticket_id))

    @staticmethod
    def _current(tenant_id: str, ticket_id: str) -> Callable[[Connection, Answer], Ticket]:
        """A replay that answers with the ticket as it is now."""
        return lambda conn, outcome: load_ticket(conn, tenant_id, ticket_id)

    def submit(
        self,
        tenant_id: str,
        ticket_id: str,
        token: str,
        result_json: str,
        key: RequestKey | None = None,
        *,
        holder: str | None = None,
    ) -> tuple[Ticket, list[str]]:
        def work(conn: Connection, now: datetime) -> tuple[tuple[Ticket, list[str]], Answer]:
            row = self._lock_leased(conn, tenant_id, ticket_id, token, now, resubmit_ok=True, holder=holder)
            if row.last_submitted_token == token:
                return (to_ticket(row), []), {}  # a retried SubmitWork without a request_id
            stages = row.stages.split(",")
            next_stage = stages[row.stage_index + 1] if row.stage_index + 1 < len(stages) else None
            result, judged, said = result_json, list[AuditEntry](), dict[str, Any]()
            if row.role == AgentRole.JUDGE and row.pattern == CollaborationPattern.ENSEMBLE:
                result, audit, said = ensembles.judged(conn, row, result_json)
                judged = [audit]
                cancel_leftovers(conn, row, said["attempt"], now)
            merge_requests.after_submit(conn, row, result, next_stage, now)
            learnings.after_submit(conn, row, result, now)
            if self.stages is not None:
                self.stages.submitted(conn, row)
            common: dict[str, Any] = {
                **CLEARED_LEASE,
                "result_json": result,
                "last_submitted_token": token,
                "updated_at": now,
            }
            if next_stage is not None:
                return (self._next_stage(conn, row, next_stage, common, now, judged, said), []), {}
            ticket, unblocked = self._complete(conn, row, common, now)
            return (ticket, unblocked), {"unblocked": unblocked}

        def replay(conn: Connection, outcome: Answer) -> tuple[Ticket, list[str]]:
            return load_ticket(conn, tenant_id, ticket_id), list(outcome.get(AuditEvent.UNBLOCKED, []))

        return requests.LOG.run(self.db, key, self.clock.now, work, replay)

    @staticmethod
    def _next_stage(
        conn: Connection,
        row: Row[Any],
        next_stage: str,
        values: dict[str, Any],
        now: datetime,
        audit: Sequence[AuditEntry] = (),
        said: dict[str, Any] | None = None,
    ) -> Ticket:
        ticket = stmt.update_ticket(
            conn,
            row.id,
            {
                **values,
                "state": TicketState.READY.value,
                "stage_index": row.stage_index + 1,
                "role": next_stage,
            },
        )
        agent = row.claimed_by_agent_id
        journal.record(
            conn,
            now,
            [
                failures.transition_audit(
                    row, AuditEvent.STAGE_COMPLETE, ActorType.AGENT, agent, stage=row.role
                ),
                *audit,
            ],
            [
                journal.ticket_event(
                    EventType.STAGE_COMPLETE,
                    ticket,
                    completed_stage=row.role,
                    next_stage=next_stage,
                    agent_id=agent,
                    **(said or {}),
                )
            ],
        )
        return ticket

    def _complete(
        self, conn: Connection, row: Row[Any], values: dict[str, Any], now: datetime
    ) -> tuple[Ticket, list[str]]:
        ticket = stmt.update_ticket(conn, row.id, {**values, "state": TicketState.DONE.value})
        unblocked = self._unblock_dependents(conn, row.id, now) if row.child_count else []
        agent = row.claimed_by_agent_id
        duration = (now - row.created_at).total_seconds()
        link, more = milestones.on_done(conn, row, now)
        ticket = replace(ticket, actual_minutes=link["actual_minutes"])
        if row.ensemble_of is not None:
            # An ensemble's attempt is a stage of its ensemble ticket.
            done = journal.ticket_event(
                EventType.STAGE_COMPLETE,
                ticket,
                completed_stage=row.role,
                ensemble_ticket_id=row.ensemble_of,
                attempt=row.attempt,
                agent_id=agent,
            )
        else:
            done = journal.ticket_event(
                EventType.COMPLETED, ticket, agent_id=agent, duration_seconds=round(duration, 3), **link
            )
        journal.record(
            conn,
            now,
            [
                failures.transition_audit(row, AuditEvent.COMPLETED, ActorType.AGENT, agent),
                *(
                    AuditEntry(
                        row.tenant_id,
                        child,
                        AuditEvent.UNBLOCKED,
                        ActorType.SYSTEM,
                        new_value={"state": TicketState.READY.value},
                    )
                    for child in unblocked
                ),
            ],
            [done, *more],
        )
        if row.ensemble_of is not None:
            ensembles.after_attempt(conn, row, now)
        return ticket, unblocked

    @staticmethod
    def _unblock_dependents(conn: Connection, parent_id: str, now: datetime) -> list[str]:
        """Count one parent done on each child; children at zero become READY."""
        rows = conn.execute(stmt.UNBLOCK_CHILDREN, {"parent": parent_id, "now": now}).all()
        for r in rows:
            ready.noted(conn, r.id, ready.ReadyKey(r.tenant_id, r.project_id, r.role), r.state)
        return sorted(r.id for r in rows if r.state == TicketState.READY)

    def fail(
        self,
        tenant_id: str,
        ticket_id: str,
        token: str,
        reason: str,
        details_json: str,
        key: RequestKey | None = None,
        *,
        holder: str | None = None,
    ) -> FailureOutcome:
        def work(conn: Connection, now: datetime) -> tuple[FailureOutcome, Answer]:
            row = self._lock_leased(conn, tenant_id, ticket_id, token, now, holder=holder)
            outcome = self._fail(conn, row, reason, details_json, now)
            return outcome, {"quarantined": outcome.quarantined}

        def replay(conn: Connection, outcome: Answer) -> FailureOutcome:
            return FailureOutcome(load_ticket(conn, tenant_id, ticket_id), bool(outcome["quarantined"]))

        return requests.LOG.run(self.db, key, self.clock.now, work, replay)

    def _fail(
        self, conn: Connection, row: Row[Any], reason: str, details_json: str, now: datetime
    ) -> FailureOutcome:
        merge_requests.after_failure(conn, row, reason, details_json, now)
        stages = row.stages.split(",")
        back = failures.send_back(row, stages, details_json)
        if self.stages is not None:
            self.stages.failed(conn, row, stages[back] if back is not None else None)
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
        learnings.after_failure(conn, row, reason, details_json, now)
        if back is None or outcome.quarantined:
            return outcome
        # Checked and refused: back to its author for rework, with the findings.
        ticket = stmt.update_ticket(conn, row.id, {"stage_index": back, "role": stages[back]})
        journal.record(
            conn,
            now,
            [
                AuditEntry(
                    row.tenant_id,
                    row.id,
                    AuditEvent.SENT_BACK,
                    ActorType.AGENT,
                    actor_id=row.claimed_by_agent_id,
                    old_value={"stage": row.role},
                    new_value={
                        "stage": stages[back],
                        "findings": failures.details_of(details_json).get("findings"),
                    },
                    rationale=reason,
                )
            ],
        )
        return FailureOutcome(ticket, False)

    def release(
        self,
        tenant_id: str,
        ticket_id: str,
        token: str,
        key: RequestKey | None = None,
        *,
        holder: str | None = None,
    ) -> Ticket:
        def work(conn: Connection, now: datetime) -> tuple[Ticket, Answer]:
            row = self._lock_leased(conn, tenant_id, ticket_id, token, now, holder=holder)
            ticket = stmt.update_ticket(
                conn, ticket_id, {**CLEARED_LEASE, "state": TicketState.READY.value, "updated_at": now}
            )
            journal.record(
                conn,
                now,
                [
                    failures.transition_audit(
                        row, AuditEvent.RELEASED, ActorType.AGENT, row.claimed_by_agent_id
                    )
                ],
            )
            return ticket, {}

        return requests.LOG.run(self.db, key, self.clock.now, work, self._current(tenant_id, ticket_id))
