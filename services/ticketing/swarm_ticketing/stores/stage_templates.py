"""The template version each lease was given, and its outcome.

At the claim (in the claim's own transaction) the ticket's stage is resolved
to a version (`stores.templates.resolve_in`) and remembered under the new
claim token; the claim answers with it, and a replayed claim answers with the
same. When the stage ends, in the transaction that ends it, its outcome is
recorded against that version (`stores.deployments`):

- SubmitWork: the stage's work was accepted — a success;
- ReportFailure: the stage failed — a failure of its version;
- a refusal by a checking stage (reviewer, security or tests reporting a
  failure with `review: rejected`): the checker did its job (a success of
  its version) and the refused work counts as a failure of the version of
  the stage it goes back to (the author's);
- a lease lost with its VM or given back is not the template's doing: it is
  not counted (the claim's version is simply not reported).

A coder's accepted submission and a later rejection of that work are two
outcomes (one success, one failure): a version whose every change is
rejected sits at 50 % failures, above the 30 % that rolls it back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from swarm_ticketing.domain import Ticket
from swarm_ticketing.stores.deployments import Deployments
from swarm_ticketing.stores.entitlements import charge_use
from swarm_ticketing.stores.templates import resolve_in, version_by_id
from swarm_ticketing.tables import stage_templates
from swarm_ticketing.templates import OutcomeCause, Resolved

S = stage_templates


class StageTemplates:
    def __init__(self, deployments: Deployments) -> None:
        self.deployments = deployments

    def assign(self, conn: Connection, ticket: Ticket, claim_token: str, now: datetime) -> Resolved:
        """Resolve the claimed stage's version and remember it for this lease."""
        resolved = resolve_in(conn, ticket.tenant_id, ticket.current_role.value, ticket.id)
        conn.execute(
            sa.insert(S).values(
                claim_token=claim_token,
                tenant_id=ticket.tenant_id,
                ticket_id=ticket.id,
                stage=ticket.current_role.value,
                version_id=resolved.version.id,
                deployment_id=resolved.deployment_id,
                canary=resolved.canary,
                created_at=now,
            )
        )
        # A per-use marketplace version is charged here, once per claim (a
        # dictionary look-up for any other version).
        charge_use(conn, ticket.tenant_id, resolved.version.id, ticket.id, claim_token, now)
        return resolved

    def of_claim(self, conn: Connection, claim_token: str) -> Resolved | None:
        row = conn.execute(sa.select(S).where(S.c.claim_token == claim_token)).first()
        if row is None:
            return None
        return Resolved(version_by_id(conn, row.version_id), row.deployment_id, row.canary)

    def submitted(self, conn: Connection, ticket: Row[Any]) -> None:
        self._record(conn, ticket, self._given(conn, ticket.claim_token), OutcomeCause.SUBMITTED)

    def failed(self, conn: Connection, ticket: Row[Any], author_stage: str | None) -> None:
        """A stage failed; `author_stage` when a checking stage refused the work
        and sent it back to that stage (the author's version failed, not the checker's)."""
        own = self._given(conn, ticket.claim_token)
        if author_stage is None:
            self._record(conn, ticket, own, OutcomeCause.STAGE_FAILED)
            return
        self._record(conn, ticket, own, OutcomeCause.SUBMITTED)  # the check was done
        author = self._latest(conn, ticket.id, author_stage)
        self._record(conn, ticket, author, OutcomeCause.REVIEW_REJECTED)

    def _given(self, conn: Connection, claim_token: str | None) -> Row[Any] | None:
        if claim_token is None:
            return None
        return conn.execute(sa.select(S).where(S.c.claim_token == claim_token)).first()

    def _latest(self, conn: Connection, ticket_id: str, stage: str) -> Row[Any] | None:
        return conn.execute(
            sa.select(S)
            .where(S.c.ticket_id == ticket_id, S.c.stage == stage)
            .order_by(S.c.created_at.desc())
            .limit(1)
        ).first()

    def _record(
        self, conn: Connection, ticket: Row[Any], given: Row[Any] | None, cause: OutcomeCause
    ) -> None:
        if given is None:  # claimed before templates, or by hand: nothing to count against
            return
        deployment = given.deployment_id if given.canary else None
        self.deployments.record_in(
            conn, given.tenant_id, ticket.id, given.stage, given.version_id, deployment, cause
        )
