"""The REST resources: Create / Public model families and their mapping from
the backends' protobuf messages (raw protos stop here)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm_gateway.enums import (
    AGENT_ROLE,
    COLLABORATION_PATTERN,
    MERGE_REQUEST_STATE,
    QUARANTINE_CAUSE,
    TICKET_STATE,
    TICKET_TYPE,
)

TicketType = Literal["feature", "bug", "chore", "docs", "test", "refactor", "design"]
Role = Literal["coder", "reviewer", "security", "tests", "judge", "clarifier", "decomposer"]
TicketState = Literal["blocked", "ready", "assigned", "in_progress", "done", "quarantined", "cancelled"]
Plan = Literal["free", "pro", "enterprise"]
Resource = Literal["vms", "tickets_per_day", "api_calls_per_hour", "cost_usd_month", "cost_usd_per_ticket"]
QuarantineCause = Literal["failures", "budget_exceeded"]
Pattern = Literal["custom", "single", "pipeline", "ensemble"]


def _utf8(value: str) -> str:
    # JSON may carry lone surrogates ("\ud800"), which no backend can store.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text (lone surrogate found)") from exc
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_utf8)]
# A quota limit: what the quota service accepts (and what fits its int64).
Limit = Annotated[int, Field(ge=0, le=10**15)]
# An LLM cost cap per ticket in micro-dollars (1 USD = 1,000,000); 0 admits no spend.
CostCap = Annotated[int, Field(ge=0, le=10**15, description="Micro-dollars; null: inherit")]


class Request(BaseModel):
    """Request bodies are strict: no coercion (false is not 0, 1 is not "1")."""

    model_config = ConfigDict(strict=True)


UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
NAME_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"


def to_timestamp(value: datetime) -> Timestamp:
    """A caller's time as a protobuf Timestamp; without a zone it is UTC."""
    out = Timestamp()
    out.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return out


def ts(value: Timestamp, present: bool = True) -> datetime | None:
    return value.ToDatetime(tzinfo=UTC) if present else None


# -- ticketing ------------------------------------------------------------------------


class TicketCreate(Request):
    key: Text = Field(min_length=1, max_length=128, description="Name local to this request, for depends_on")
    name: Text = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=20_000)
    type: TicketType = "feature"
    priority: int = Field(default=0, ge=-1000, le=1000)
    stages: list[Role] | None = Field(
        default=None, min_length=1, max_length=10, description="null: the pattern's stages, else [coder]"
    )
    pattern: Pattern | None = Field(
        default=None,
        description=(
            "single: coder -> reviewer; pipeline: coder -> security -> tests -> reviewer; ensemble: N coders "
            "in parallel -> judge -> reviewer. null: the stages listed, else the project's pattern"
        ),
    )
    ensemble_size: int | None = Field(default=None, ge=2, le=8, description="ensemble only; default 3")
    ensemble_quorum: int | None = Field(
        default=None, ge=1, le=8, description="ensemble only: attempts that must succeed; default all"
    )
    depends_on: list[Text] = Field(default_factory=list, max_length=100)
    cost_cap_usd_micros: CostCap | None = None

    def to_proto(self) -> tpb.TicketSpec:
        return tpb.TicketSpec(
            pattern=COLLABORATION_PATTERN.number(self.pattern) if self.pattern else 0,  # type: ignore[arg-type]
            ensemble_size=self.ensemble_size or 0,
            ensemble_quorum=self.ensemble_quorum or 0,
            cost_cap_usd_micros=self.cost_cap_usd_micros,
            key=self.key,
            name=self.name,
            description=self.description,
            type=TICKET_TYPE.number(self.type),  # type: ignore[arg-type]
            priority=self.priority,
            stages=[AGENT_ROLE.number(s) for s in self.stages or ()],  # type: ignore[misc]
            depends_on=self.depends_on,
        )


class ProjectCreate(Request):
    name: Text = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=20_000)
    tickets: list[TicketCreate] = Field(min_length=1, max_length=5000)
    repository: Text = Field(
        default="",
        max_length=2048,
        description=(
            "Git repository agents clone: https://host/path, ssh://host/path or user@host:path under one "
            "of the tenant's allowed prefixes (403 otherwise), or a local path where the operator enabled "
            "them; empty: agents' own"
        ),
    )
    base_branch: Text = Field(default="main", min_length=1, max_length=250)
    ticket_cost_cap_usd_micros: CostCap | None = None
    pattern: Pattern | None = Field(
        default=None, description="The pattern of every ticket that names neither stages nor a pattern"
    )


class CostCapUpdate(Request):
    cost_cap_usd_micros: CostCap | None = Field(description="null: the project's or tenant's cap applies")
    reason: Text = Field(default="", max_length=2000)


class LeasePublic(BaseModel):
    agent_id: str
    expires_at: datetime


class EstimatePublic(BaseModel):
    complexity_score: int = Field(description="1-10, from the description and dependencies")
    optimistic_minutes: int
    expected_minutes: int
    pessimistic_minutes: int
    confidence: Literal["high", "medium", "low"] = Field(
        description="high: the tenant's (complexity, type) history; medium: its type's; low: heuristic"
    )

    @classmethod
    def from_proto(cls, e: tpb.TicketEstimate) -> EstimatePublic:
        return cls(
            complexity_score=e.complexity_score,
            optimistic_minutes=e.optimistic_minutes,
            expected_minutes=e.expected_minutes,
            pessimistic_minutes=e.pessimistic_minutes,
            confidence=e.confidence,  # type: ignore[arg-type]
        )


class TicketPublic(BaseModel):
    id: str
    project_id: str
    name: str
    description: str
    type: TicketType
    priority: int
    state: TicketState
    stages: list[Role]
    stage_index: int
    depends_on: list[str]
    # The claim token is the agent's secret and is never shown here.
    lease: LeasePublic | None
    failure_count: int
    last_failure_reason: str | None
    last_failure_at: datetime | None
    quarantine_reason: str | None
    quarantined_at: datetime | None
    quarantine_cause: QuarantineCause | None
    cost_cap_usd_micros: int | None
    pattern: Pattern
    ensemble_ticket_id: str | None = Field(description="An ensemble's attempt: the ensemble ticket")
    attempt: int | None
    estimate: EstimatePublic | None
    actual_minutes: float | None = Field(description="Once done: the minutes its leases were held")
    result: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_proto(cls, t: tpb.Ticket) -> TicketPublic:
        return cls(
            id=t.id,
            project_id=t.project_id,
            name=t.name,
            description=t.description,
            type=TICKET_TYPE.name(t.type),  # type: ignore[arg-type]
            priority=t.priority,
            state=TICKET_STATE.name(t.state),  # type: ignore[arg-type]
            stages=[AGENT_ROLE.name(s) for s in t.stages],  # type: ignore[misc]
            stage_index=t.stage_index,
            depends_on=list(t.depends_on),
            lease=LeasePublic(
                agent_id=t.lease.agent_id, expires_at=t.lease.expire_time.ToDatetime(tzinfo=UTC)
            )
            if t.HasField("lease")
            else None,
            failure_count=t.failure_count,
            last_failure_reason=t.last_failure_reason or None,
            last_failure_at=ts(t.last_failure_time, t.HasField("last_failure_time")),
            quarantine_reason=t.quarantine_reason or None,
            quarantined_at=ts(t.quarantine_time, t.HasField("quarantine_time")),
            quarantine_cause=QUARANTINE_CAUSE.name(t.quarantine_cause) or None,  # type: ignore[arg-type]
            cost_cap_usd_micros=t.cost_cap_usd_micros if t.HasField("cost_cap_usd_micros") else None,
            pattern=COLLABORATION_PATTERN.name(t.pattern) or "custom",  # type: ignore[arg-type]
            ensemble_ticket_id=t.ensemble_ticket_id or None,
            attempt=t.attempt or None,
            estimate=EstimatePublic.from_proto(t.estimate) if t.HasField("estimate") else None,
            actual_minutes=t.actual_minutes if t.HasField("actual_minutes") else None,
            result=json.loads(t.result_json) if t.result_json else None,
            created_at=t.create_time.ToDatetime(tzinfo=UTC),
            updated_at=t.update_time.ToDatetime(tzinfo=UTC),
        )


class ProjectPublic(BaseModel):
    id: str
    name: str
    description: str
    ticket_count: int
    done_count: int
    created_at: datetime
    repository: str | None
    base_branch: str
    ticket_cost_cap_usd_micros: int | None
    pattern: Pattern

    @classmethod
    def from_proto(cls, p: tpb.Project) -> ProjectPublic:
        return cls(
            id=p.id,
            name=p.name,
            description=p.description,
            ticket_count=p.ticket_count,
            done_count=p.done_count,
            created_at=p.create_time.ToDatetime(tzinfo=UTC),
            repository=p.repository or None,
            base_branch=p.base_branch or "main",
            ticket_cost_cap_usd_micros=(
                p.ticket_cost_cap_usd_micros if p.HasField("ticket_cost_cap_usd_micros") else None
            ),
            pattern=COLLABORATION_PATTERN.name(p.pattern) or "custom",  # type: ignore[arg-type]
        )


class ProjectProgress(BaseModel):
    project_id: str
    ticket_count: int
    done: int
    in_progress: int
    queued: int
    quarantined: int
    cancelled: int
    percent_complete: float
    remaining_minutes: float
    critical_path_minutes: float
    working_agents: int
    eta_minutes: float
    eta: datetime
    estimated_done: int = Field(description="Done tickets that had an estimate")
    inside_range: int = Field(description="Of those, how many finished inside their estimate's range")

    @classmethod
    def from_proto(cls, p: tpb.GetProjectProgressResponse) -> ProjectProgress:
        fields = {k: getattr(p, k) for k in cls.model_fields if k != "eta"}
        return cls(**fields, eta=p.eta_time.ToDatetime(tzinfo=UTC))


class ProjectCreated(BaseModel):
    project: ProjectPublic
    tickets: list[TicketPublic]


class ProjectPage(BaseModel):
    items: list[ProjectPublic]
    next_page_token: str


class TicketPage(BaseModel):
    items: list[TicketPublic]
    next_page_token: str


class TicketEventPublic(BaseModel):
    id: str
    event_type: str
    actor_type: str
    actor_id: str | None
    old_value: dict[str, Any] | None
    new_value: dict[str, Any] | None
    rationale: str | None
    created_at: datetime

    @classmethod
    def from_proto(cls, e: tpb.TicketEvent) -> TicketEventPublic:
        return cls(
            id=e.id,
            event_type=e.event_type,
            actor_type=e.actor_type,
            actor_id=e.actor_id or None,
            old_value=json.loads(e.old_value_json) if e.old_value_json else None,
            new_value=json.loads(e.new_value_json) if e.new_value_json else None,
            rationale=e.rationale or None,
            created_at=e.create_time.ToDatetime(tzinfo=UTC),
        )


class TicketEventPage(BaseModel):
    items: list[TicketEventPublic]
    next_page_token: str


class TicketUpdate(Request):
    description: Text | None = Field(default=None, max_length=20_000)
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    stages: list[Role] | None = Field(
        default=None, min_length=1, max_length=10, description="New stages start the ticket at the first"
    )
    reason: Text = Field(default="", max_length=2000)


class CancelRequest(Request):
    reason: Text = Field(default="", max_length=2000)


class TicketCancel(CancelRequest):
    cascade: bool = Field(default=False, description="Also cancel every unfinished ticket that depends on it")


class CancelResult(BaseModel):
    tickets: list[TicketPublic] = Field(description="Every ticket cancelled (the one asked for first)")


class RedriveRequest(Request):
    ticket_ids: list[Annotated[str, Field(pattern=UUID_PATTERN)]] = Field(min_length=1, max_length=500)
    reason: Text = Field(default="", max_length=2000)


class RedriveResult(BaseModel):
    tickets: list[TicketPublic]


MergeRequestState = Literal["open", "merged", "rejected", "closed"]


class MergeRequestPublic(BaseModel):
    id: str
    project_id: str
    ticket_id: str
    branch: str
    commit: str
    state: MergeRequestState
    merge_commit: str | None
    review_comments: str | None
    author_agent_id: str | None
    reviewer_agent_id: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_proto(cls, m: tpb.MergeRequest) -> MergeRequestPublic:
        return cls(
            id=m.id,
            project_id=m.project_id,
            ticket_id=m.ticket_id,
            branch=m.branch,
            commit=m.commit,
            state=MERGE_REQUEST_STATE.name(m.state),  # type: ignore[arg-type]
            merge_commit=m.merge_commit or None,
            review_comments=m.review_comments or None,
            author_agent_id=m.author_agent_id or None,
            reviewer_agent_id=m.reviewer_agent_id or None,
            created_at=m.create_time.ToDatetime(tzinfo=UTC),
            updated_at=m.update_time.ToDatetime(tzinfo=UTC),
        )


class MergeRequestPage(BaseModel):
    items: list[MergeRequestPublic]
    next_page_token: str
