"""The claim: the hot path of the whole platform.

On PostgreSQL a claim is ONE statement: a `FOR UPDATE SKIP LOCKED` subquery
picks the best ready ticket (highest priority, then oldest) for an
`UPDATE … RETURNING`, and data-modifying CTEs write its audit, outbox and
idempotency rows from the leased row (`statements.claim_and_record`);
concurrent claimers step over each other's rows instead of queueing. On
SQLite the write transaction is BEGIN IMMEDIATE (one writer): it selects the
candidate, leases it and writes the rows one by one. Either way the claim
then resolves the stage's agent template version, in the same transaction.

When nothing is ready, the claim takes over an expired lease itself (counting
the loss as a failure); the reaper is the safety net for expired leases that
ready work keeps the claim path from reaching.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from swarm_ticketing.domain import (
    LEASE_EXPIRED_REASON,
    ActorType,
    AgentRole,
    AuditEvent,
    Claim,
    CollaborationPattern,
    EventType,
    Lease,
    LeasePolicy,
)
from swarm_ticketing.stores import ensembles, failures, journal, requests
from swarm_ticketing.stores import statements as stmt
from swarm_ticketing.stores.journal import AuditEntry
from swarm_ticketing.stores.rows import to_ticket
from swarm_ticketing.stores.stage_templates import StageTemplates
from swarm_ticketing.tables import claim_requests, tickets
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.outbox import OutboxEvent, current_traceparent

T = tickets
_INSERT_CLAIM_REQUEST = sa.insert(claim_requests)


class Abandoned(Exception):
    """The long poll that made this claim has no caller any more: roll back."""


@dataclass(frozen=True)
class ClaimRequest:
    tenant_id: str
    agent_id: str
    role: AgentRole | None = None
    project_id: str | None = None
    request_id: str | None = None
    lease: timedelta | None = None
    # Digest of the whole request: a request_id reused for another claim is refused.
    fingerprint: str | None = None


class Claims:
    def __init__(
        self, db: Database, clock: Clock, policy: LeasePolicy, stages: StageTemplates | None = None
    ) -> None:
        self.db = db
        self.clock = clock
        self.policy = policy
        # Which template version each lease works with (None: no templates).
        self.stages = stages

    def claim(self, req: ClaimRequest, wanted: Callable[[], bool] | None = None) -> Claim | None:
        """Lease the best claimable ticket to an agent, or None if there is none.

        `wanted` is asked just before the commit: a long poll whose caller
        went away answers False, and the claim rolls back (None)."""
        try:
            return self.db.transaction(lambda conn: self._claim(conn, req, wanted))
        except Abandoned:
            return None
        except IntegrityError:
            # Another call with the same (agent, request_id) committed first:
            # our claim rolled back; answer with the lease that call got.
            replay = self.db.transaction(lambda conn: self._replay(conn, req), write=False)
            if replay is None:
                raise
            return replay

    def _claim(self, conn: Connection, req: ClaimRequest, wanted: Callable[[], bool] | None) -> Claim | None:
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
        if self.db.is_postgres:
            claim = self._claim_in_one(conn, req, shape, params)
            if claim is not None:
                claim = self._with_template(conn, claim, now)
                if wanted is not None and not wanted():
                    raise Abandoned
                return claim
            row, ready_since = None, None
        else:
            row, ready_since = self._lease_ready(conn, shape, params)
        audit: list[AuditEntry] = []
        events: list[OutboxEvent] = []
        rescued = None
        if row is None:
            rescued = conn.execute(
                stmt.expired_candidate(*shape), {**params, "max_failures": self.policy.max_failures}
            ).first()
            if rescued is None:
                return self._replay(conn, req) if req.request_id else None
            ready_since = rescued.claim_expires_at
            row = conn.execute(
                stmt.RESCUE, {**params, "ticket_id": rescued.id, "reason": LEASE_EXPIRED_REASON}
            ).one()
            audit.append(
                failures.failure_audit(
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
                    "fingerprint": req.fingerprint,
                },
            )
        audit.append(
            AuditEntry(
                req.tenant_id,
                ticket.id,
                AuditEvent.ASSIGNED,
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
        claim = self._with_template(conn, Claim(ticket, lease, ready_since), now)
        if wanted is not None and not wanted():
            raise Abandoned
        return claim

    def _with_template(self, conn: Connection, claim: Claim, now: datetime) -> Claim:
        """The claim with its stage's template version (nothing deployed for
        the stage's type: FAILED_PRECONDITION, and the claim rolls back),
        and a judge's ensemble attempts."""
        claim = _with_attempts(conn, claim)
        if self.stages is None:
            return claim
        resolved = self.stages.assign(conn, claim.ticket, claim.lease.claim_token, now)
        return replace(claim, template=resolved)

    def _claim_in_one(
        self, conn: Connection, req: ClaimRequest, shape: tuple[bool, bool], params: dict[str, Any]
    ) -> Claim | None:
        """PostgreSQL: lease, audit, outbox and idempotency rows in one statement."""
        row = conn.execute(
            stmt.claim_and_record(*shape, bool(req.request_id)),
            {
                **params,
                "expires_text": str(params["expires"]),
                "audit_id": str(uuid.uuid4()),
                "event_id": str(uuid.uuid4()),
                "outbox_traceparent": current_traceparent(),
                "request_id": req.request_id,
                "fingerprint": req.fingerprint,
            },
        ).first()
        if row is None:
            return None
        return Claim(to_ticket(row), Lease(params["token"], req.agent_id, params["expires"]), row.ready_since)

    def _lease_ready(
        self, conn: Connection, shape: tuple[bool, bool], params: dict[str, Any]
    ) -> tuple[Row[Any] | None, datetime | None]:
        """SQLite: the best ready ticket, leased, and since when it was ready
        (its RETURNING sees only the updated table, so it selects first,
        inside its BEGIN IMMEDIATE transaction)."""
        pick = conn.execute(stmt.ready_candidate(*shape), params).first()
        if pick is None:
            return None, None
        return conn.execute(stmt.LEASE_TICKET, {**params, "ticket_id": pick.id}).one(), pick.ready_since

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
        if prior.fingerprint is not None and prior.fingerprint != req.fingerprint:
            raise requests.reused("ClaimTicket", prior.request_id)
        row = conn.execute(sa.select(T).where(T.c.id == prior.ticket_id)).one()
        template = self.stages.of_claim(conn, prior.claim_token) if self.stages is not None else None
        claim = Claim(
            to_ticket(row),
            Lease(prior.claim_token, req.agent_id, prior.expires_at),
            template=template,
        )
        return _with_attempts(conn, claim)


def _with_attempts(conn: Connection, claim: Claim) -> Claim:
    """An ensemble judge's claim carries the attempts it chooses from."""
    t = claim.ticket
    if t.pattern != CollaborationPattern.ENSEMBLE or claim.stage != AgentRole.JUDGE:
        return claim
    return replace(claim, attempts=ensembles.attempts_of(conn, t.id))
