"""Ensembles (seed §11): N coders work one ticket in parallel, a judge
chooses one attempt with a written rationale, a reviewer reviews the chosen
branch.

An ensemble ticket is stored as itself (stages judge -> reviewer) and its N
attempts (stage coder, `ensemble_of` naming it; `dag.plan`): the attempts
take over the ticket's dependencies and the ensemble ticket depends on
them, so each attempt has its own lease, branch, result, failures and
template version through the ordinary claim path.

The judge becomes claimable
- when `quorum` attempts are done: the ensemble ticket's pending count
  starts at its quorum and each done attempt counts one off (the DAG's own
  unblocking), or
- when every attempt has ended (done or quarantined) and at least one is
  done (`after_attempt`): a failed attempt does not hold the judge up;
- when every attempt ended and none is done, the ensemble ticket is
  quarantined with that reason.

The judge's SubmitWork names its choice and rationale (`judged`): the
choice must be a done attempt whose branch was not rejected in review; the
server — not the judge — copies that attempt's branch and commit into the
ticket's result, so the merge request opens for the chosen branch only. A
review rejection sends the ticket back to the judge, which must choose
another attempt.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from swarm_ticketing.domain import (
    MAX_RATIONALE,
    ActorType,
    AuditEvent,
    EnsembleAttempt,
    EventType,
    MergeRequestState,
    QuarantineCause,
    TicketState,
)
from swarm_ticketing.stores import journal
from swarm_ticketing.stores import statements as stmt
from swarm_ticketing.stores.journal import AuditEntry
from swarm_ticketing.stores.tickets import lock_ticket
from swarm_ticketing.tables import merge_requests, tickets
from swarmcommon.errors import InvalidArgument

T = tickets
M = merge_requests
_FIELD = "result_json"


def _result(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def attempts_of(conn: Connection, ensemble_id: str) -> tuple[EnsembleAttempt, ...]:
    """The ensemble's attempts in order, each marked when its branch was
    chosen before and rejected in review."""
    rejected = set(
        conn.execute(
            sa.select(M.c.branch).where(
                M.c.ticket_id == ensemble_id, M.c.state == MergeRequestState.REJECTED.value
            )
        ).scalars()
    )
    rows = conn.execute(sa.select(T).where(T.c.ensemble_of == ensemble_id).order_by(T.c.attempt)).all()
    return tuple(
        EnsembleAttempt(
            ticket_id=r.id,
            attempt=r.attempt,
            state=TicketState(r.state),
            result_json=r.result_json,
            agent_id=r.claimed_by_agent_id,
            last_failure_reason=r.last_failure_reason,
            rejected=_result(r.result_json).get("branch") in rejected,
        )
        for r in rows
    )


def after_attempt(conn: Connection, attempt: Row[Any], now: datetime) -> None:
    """An attempt ended (done, quarantined or cancelled): start the judge once every
    attempt has ended and one succeeded, or quarantine the ensemble ticket
    when none did. Nothing to do while attempts are still running, or once
    the judge has started (the quorum was reached)."""
    main = lock_ticket(conn, attempt.tenant_id, attempt.ensemble_of)
    if main.state != TicketState.BLOCKED:
        return
    states = Counter(conn.execute(sa.select(T.c.state).where(T.c.ensemble_of == main.id)).scalars())
    total, done = sum(states.values()), states[TicketState.DONE.value]
    if done + states[TicketState.QUARANTINED.value] + states[TicketState.CANCELLED.value] < total:
        return
    if done:
        ticket = stmt.update_ticket(
            conn, main.id, {"state": TicketState.READY.value, "pending_parents": 0, "updated_at": now}
        )
        journal.record(
            conn,
            now,
            [
                AuditEntry(
                    main.tenant_id,
                    main.id,
                    AuditEvent.UNBLOCKED,
                    ActorType.SYSTEM,
                    new_value={"state": ticket.state.value, "attempts_done": done, "attempts": total},
                    rationale=f"every attempt ended, {done} of {total} succeeded",
                )
            ],
        )
        return
    reason = f"every ensemble attempt failed ({total - done} of {total} quarantined or cancelled)"
    ticket = stmt.update_ticket(
        conn,
        main.id,
        {
            "state": TicketState.QUARANTINED.value,
            "quarantined_at": now,
            "quarantine_reason": reason,
            "quarantine_cause": QuarantineCause.FAILURES.value,
            "last_failure_reason": reason,
            "last_failure_at": now,
            "updated_at": now,
        },
    )
    journal.record(
        conn,
        now,
        [
            AuditEntry(
                main.tenant_id,
                main.id,
                AuditEvent.QUARANTINED,
                ActorType.SYSTEM,
                old_value={"state": main.state},
                new_value={"state": ticket.state.value},
                rationale=reason,
            )
        ],
        [journal.ticket_event(EventType.QUARANTINED, ticket, reason=reason)],
    )


def judged(conn: Connection, row: Row[Any], result_json: str) -> tuple[str, AuditEntry, dict[str, Any]]:
    """A judge's result checked against its ensemble: the result to store
    (with the chosen attempt's branch and commit), the audit entry with the
    rationale, and what the stage-complete event says. INVALID_ARGUMENT (and
    nothing written) for a choice that is not a done, unrejected attempt."""
    result = _result(result_json)
    rationale = result.get("rationale")
    if not isinstance(rationale, str) or not rationale.strip():
        raise InvalidArgument(f"{_FIELD}.rationale", "a judge says why it chose: a non-empty rationale")
    if len(rationale) > MAX_RATIONALE:
        raise InvalidArgument(f"{_FIELD}.rationale", f"is too long ({len(rationale)} > {MAX_RATIONALE})")
    choice = result.get("choice")
    attempts = attempts_of(conn, row.id)
    chosen = next((a for a in attempts if choice in (a.ticket_id, a.attempt, str(a.attempt))), None)
    if chosen is None:
        shown = repr(str(choice)[:64])
        raise InvalidArgument(f"{_FIELD}.choice", f"{shown} is not an attempt of ticket {row.id}")
    if chosen.state != TicketState.DONE:
        raise InvalidArgument(f"{_FIELD}.choice", f"attempt {chosen.attempt} is {chosen.state}, not done")
    if chosen.rejected:
        raise InvalidArgument(f"{_FIELD}.choice", f"attempt {chosen.attempt}'s branch was rejected in review")
    work = _result(chosen.result_json)
    if not work.get("branch"):
        raise InvalidArgument(f"{_FIELD}.choice", f"attempt {chosen.attempt} handed back no branch")
    stored = {
        "choice": chosen.ticket_id,
        "attempt": chosen.attempt,
        "rationale": rationale.strip(),
        "branch": work.get("branch"),
        "commit": work.get("commit"),
        "summary": work.get("summary", ""),
        "candidates": [a.ticket_id for a in attempts if a.state == TicketState.DONE and not a.rejected],
    }
    audit = AuditEntry(
        row.tenant_id,
        row.id,
        AuditEvent.JUDGED,
        ActorType.AGENT,
        actor_id=row.claimed_by_agent_id,
        new_value={k: stored[k] for k in ("choice", "attempt", "branch", "candidates")},
        rationale=stored["rationale"],
    )
    event = {"choice": chosen.ticket_id, "attempt": chosen.attempt, "rationale": stored["rationale"]}
    return json.dumps(stored, separators=(",", ":")), audit, event
