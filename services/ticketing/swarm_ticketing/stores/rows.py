"""Database rows to domain objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Row

from swarm_ticketing.domain import (
    ActorType,
    AgentRole,
    CollaborationPattern,
    Lease,
    MergeRequest,
    MergeRequestState,
    Project,
    QuarantineCause,
    Ticket,
    TicketEvent,
    TicketState,
    TicketType,
)
from swarm_ticketing.estimation import Confidence, Estimate


def to_estimate(m: Any) -> Estimate | None:
    if m["complexity_score"] is None:
        return None  # made before estimates
    return Estimate(
        m["complexity_score"],
        m["estimate_optimistic"],
        m["estimate_expected"],
        m["estimate_pessimistic"],
        Confidence(m["estimate_confidence"]),
    )


CLEARED_LEASE: dict[str, Any] = {
    "claim_token": None,
    "claim_expires_at": None,
    "claimed_by_agent_id": None,
    "claimed_at": None,
}


def encode_stages(stages: Sequence[AgentRole]) -> str:
    return ",".join(s.value for s in stages)


def decode_stages(raw: str) -> tuple[AgentRole, ...]:
    return tuple(AgentRole(s) for s in raw.split(","))


def to_ticket(row: Row[Any]) -> Ticket:
    m = row._mapping
    lease = None
    if m["claim_token"] is not None and m["state"] in (
        TicketState.ASSIGNED,
        TicketState.IN_PROGRESS,
    ):
        lease = Lease(m["claim_token"], m["claimed_by_agent_id"], m["claim_expires_at"])
    return Ticket(
        id=m["id"],
        tenant_id=m["tenant_id"],
        project_id=m["project_id"],
        name=m["name"],
        description=m["description"],
        type=TicketType(m["type"]),
        priority=m["priority"],
        state=TicketState(m["state"]),
        stages=decode_stages(m["stages"]),
        stage_index=m["stage_index"],
        depends_on=tuple(m["parent_ids"].split(",")) if m["parent_ids"] else (),
        lease=lease,
        failure_count=m["failure_count"],
        last_failure_reason=m["last_failure_reason"],
        last_failure_at=m["last_failure_at"],
        quarantine_reason=m["quarantine_reason"],
        quarantined_at=m["quarantined_at"],
        result_json=m["result_json"],
        traceparent=m["traceparent"],
        repository=m["repository"],
        base_branch=m["base_branch"],
        cost_cap_usd_micros=m["cost_cap_usd_micros"],
        quarantine_cause=_cause(m["state"], m["quarantine_cause"]),
        pattern=CollaborationPattern(m["pattern"]),
        ensemble_ticket_id=m["ensemble_of"],
        attempt=m["attempt"],
        estimate=to_estimate(m),
        actual_minutes=m["actual_minutes"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _cause(state: str, raw: str | None) -> QuarantineCause | None:
    if state != TicketState.QUARANTINED:
        return None
    return QuarantineCause(raw) if raw else QuarantineCause.FAILURES


def load_tickets(rows: Sequence[Row[Any]]) -> list[Ticket]:
    return [to_ticket(r) for r in rows]


def to_project(row: Row[Any]) -> Project:
    """A project row with its `done_count` (see projects.py)."""
    m = row._mapping
    return Project(
        m["id"],
        m["tenant_id"],
        m["name"],
        m["description"],
        m["ticket_count"],
        m["done_count"],
        m["created_at"],
        m["repository"],
        m["base_branch"],
        m["ticket_cost_cap_usd_micros"],
        CollaborationPattern(m["pattern"]),
    )


def to_event(row: Row[Any]) -> TicketEvent:
    m = row._mapping
    return TicketEvent(
        id=m["id"],
        ticket_id=m["ticket_id"],
        event_type=m["event_type"],
        actor_type=ActorType(m["actor_type"]),
        actor_id=m["actor_id"],
        old_value=m["old_value"],
        new_value=m["new_value"],
        rationale=m["rationale"],
        created_at=m["created_at"],
    )


def to_merge_request(row: Row[Any]) -> MergeRequest:
    m = row._mapping
    return MergeRequest(
        id=m["id"],
        tenant_id=m["tenant_id"],
        project_id=m["project_id"],
        ticket_id=m["ticket_id"],
        branch=m["branch"],
        commit=m["commit_sha"],
        state=MergeRequestState(m["state"]),
        merge_commit=m["merge_commit"],
        review_comments=m["review_comments"],
        author_agent_id=m["author_agent_id"],
        reviewer_agent_id=m["reviewer_agent_id"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )
