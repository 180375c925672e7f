"""The ticket lifecycle's rules: states, stages, failures, the DAG.

No SQL and no protobuf here; `stores/` applies these rules atomically and
`wire.py` translates to and from the protos.

    BLOCKED ──last parent done──▶ READY ──claim──▶ ASSIGNED ──start──▶ IN_PROGRESS
                                   ▲  ▲                │                    │
                 release / failure │  └── next stage ──┴──── submit ────────┤
                   (< max)         │                                        ▼
                                   └──── redrive ── QUARANTINED          DONE
                                                  (failure == max)
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from swarm_ticketing.templates import Resolved
from swarmcommon.errors import InvalidArgument

DEFAULT_LEASE = timedelta(minutes=15)
MIN_LEASE = timedelta(seconds=1)
MAX_LEASE = timedelta(hours=2)
DEFAULT_MAX_FAILURES = 3

MAX_TICKETS_PER_PROJECT = 5000
MAX_DEPENDENCIES_PER_TICKET = 100
MAX_STAGES = 10
MAX_KEY = 128
MAX_NAME = 200
MAX_DESCRIPTION = 20_000
MAX_REASON = 2_000
MAX_JSON = 64 * 1024
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000

LEASE_EXPIRED_REASON = "lease expired"
BUDGET_EXCEEDED_REASON = "budget exceeded"
# A cost cap in micro-dollars: at most $1,000,000,000 (as quota's limits).
MAX_COST_CAP = 10**15


class TicketState(enum.StrEnum):
    BLOCKED = "blocked"
    READY = "ready"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    QUARANTINED = "quarantined"


# States in which a ticket holds a lease.
LEASED_STATES = (TicketState.ASSIGNED, TicketState.IN_PROGRESS)


class QuarantineCause(enum.StrEnum):
    FAILURES = "failures"
    BUDGET_EXCEEDED = "budget_exceeded"


class CostCapSource(enum.StrEnum):
    TICKET = "ticket"
    PROJECT = "project"


class AgentRole(enum.StrEnum):
    CODER = "coder"
    REVIEWER = "reviewer"
    SECURITY = "security"
    TESTS = "tests"
    JUDGE = "judge"
    CLARIFIER = "clarifier"
    DECOMPOSER = "decomposer"


class TicketType(enum.StrEnum):
    FEATURE = "feature"
    BUG = "bug"
    CHORE = "chore"
    DOCS = "docs"
    TEST = "test"
    REFACTOR = "refactor"
    DESIGN = "design"


class EventType(enum.StrEnum):
    """Outbox event names: the seed's strings, which webhooks subscribe to."""

    CREATED = "ticket.created"
    ASSIGNED = "ticket.assigned"
    IN_PROGRESS = "ticket.in_progress"
    COMPLETED = "ticket.completed"
    FAILED = "ticket.failed"
    QUARANTINED = "ticket.quarantined"
    BUDGET_EXCEEDED = "ticket.budget_exceeded"
    STAGE_COMPLETE = "collaboration.stage_complete"
    PR_OPENED = "pr.opened"
    PR_MERGED = "pr.merged"
    PR_REJECTED = "pr.rejected"


class AuditEvent(enum.StrEnum):
    """Audit trail entries (ListTicketEvents' `event_type`), one per transition."""

    CREATED = "created"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    STAGE_COMPLETE = "stage_complete"
    COMPLETED = "completed"
    UNBLOCKED = "unblocked"
    FAILURE_RECORDED = "failure_recorded"
    QUARANTINED = "quarantined"
    RELEASED = "released"
    REDRIVEN = "redriven"
    BUDGET_EXCEEDED = "budget_exceeded"
    COST_CAP_CHANGED = "cost_cap_changed"


class ActorType(enum.StrEnum):
    AGENT = "agent"
    SYSTEM = "system"
    HUMAN = "human"


class MergeRequestState(enum.StrEnum):
    """open -> merged | rejected; a rework after a rejection reopens it."""

    OPEN = "open"
    MERGED = "merged"
    REJECTED = "rejected"


@dataclass(frozen=True)
class LeasePolicy:
    default_lease: timedelta = DEFAULT_LEASE
    max_failures: int = DEFAULT_MAX_FAILURES


@dataclass(frozen=True)
class TicketSpec:
    key: str
    name: str
    description: str = ""
    type: TicketType = TicketType.FEATURE
    priority: int = 0
    stages: tuple[AgentRole, ...] = (AgentRole.CODER,)
    depends_on: tuple[str, ...] = ()
    cost_cap_usd_micros: int | None = None


@dataclass(frozen=True)
class ProjectSpec:
    tenant_id: str
    name: str
    description: str
    tickets: tuple[TicketSpec, ...]
    repository: str = ""
    base_branch: str = "main"
    ticket_cost_cap_usd_micros: int | None = None


@dataclass(frozen=True)
class Lease:
    claim_token: str
    agent_id: str
    expires_at: datetime


@dataclass(frozen=True)
class Ticket:
    id: str
    tenant_id: str
    project_id: str
    name: str
    description: str
    type: TicketType
    priority: int
    state: TicketState
    stages: tuple[AgentRole, ...]
    stage_index: int
    depends_on: tuple[str, ...]
    lease: Lease | None
    failure_count: int
    last_failure_reason: str | None
    last_failure_at: datetime | None
    quarantine_reason: str | None
    quarantined_at: datetime | None
    result_json: str | None
    created_at: datetime
    updated_at: datetime
    traceparent: str | None = None
    repository: str = ""
    base_branch: str = "main"
    cost_cap_usd_micros: int | None = None
    quarantine_cause: QuarantineCause | None = None

    @property
    def current_role(self) -> AgentRole:
        return self.stages[min(self.stage_index, len(self.stages) - 1)]


@dataclass(frozen=True)
class Project:
    id: str
    tenant_id: str
    name: str
    description: str
    ticket_count: int
    done_count: int
    created_at: datetime
    repository: str = ""
    base_branch: str = "main"
    ticket_cost_cap_usd_micros: int | None = None


@dataclass(frozen=True)
class TicketEvent:
    id: str
    ticket_id: str
    event_type: str
    actor_type: ActorType
    actor_id: str | None
    old_value: str | None
    new_value: str | None
    rationale: str | None
    created_at: datetime


@dataclass(frozen=True)
class MergeRequest:
    id: str
    tenant_id: str
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


@dataclass(frozen=True)
class Claim:
    """What ClaimTicket hands an agent."""

    ticket: Ticket
    lease: Lease
    # When the ticket became claimable (ready, or its last lease expired);
    # None for a replayed claim.
    ready_since: datetime | None = None
    # The agent template version to work this stage with (None: claimed
    # without templates, as stores built by hand in a few tests are).
    template: Resolved | None = None

    @property
    def stage(self) -> AgentRole:
        return self.ticket.current_role


@dataclass(frozen=True)
class SpendGrant:
    """What AuthorizeTicketSpend answers: the ticket, and the cap ticketing knows."""

    ticket_id: str
    project_id: str
    cost_cap_usd_micros: int | None
    source: CostCapSource | None


def budget_reason(spent: int, cap: int) -> str:
    return f"{BUDGET_EXCEEDED_REASON}: ${spent / 1e6:.4f} spent of a ${cap / 1e6:.4f} cost cap"


@dataclass(frozen=True)
class FailureOutcome:
    ticket: Ticket
    quarantined: bool


@dataclass(frozen=True)
class ReleasedClaims:
    released: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)


def quarantine_reason(failure_count: int, reason: str) -> str:
    return f"Failed {failure_count} times: {reason}"


def validate_project(spec: ProjectSpec) -> None:
    """Reject a project whose tickets or dependency graph are malformed.

    Raises InvalidArgument naming the offending field or, for a cycle, the
    tickets in it (by key and name). Everything a project could be refused
    for is checked here, before quota is charged or anything is written.
    """
    if not spec.tickets:
        raise InvalidArgument("tickets", "a project needs at least one ticket")
    if len(spec.tickets) > MAX_TICKETS_PER_PROJECT:
        raise InvalidArgument(
            "tickets",
            f"too many tickets ({len(spec.tickets)} > {MAX_TICKETS_PER_PROJECT})",
        )
    keys: dict[str, int] = {}
    for i, ticket in enumerate(spec.tickets):
        if ticket.key in keys:
            raise InvalidArgument(f"tickets[{i}].key", f"duplicate key {ticket.key!r}")
        keys[ticket.key] = i
    for i, ticket in enumerate(spec.tickets):
        _validate_dependencies(f"tickets[{i}].depends_on", ticket, keys)
    cycle = find_cycle({t.key: t.depends_on for t in spec.tickets})
    if cycle:
        names = {t.key: t.name for t in spec.tickets}
        members = " -> ".join(f"{key} ({names[key]})" for key in [*cycle, cycle[0]])
        raise InvalidArgument("tickets", f"dependency cycle: {members}", cycle=",".join(cycle))


def _validate_dependencies(field: str, ticket: TicketSpec, keys: dict[str, int]) -> None:
    if len(ticket.depends_on) > MAX_DEPENDENCIES_PER_TICKET:
        raise InvalidArgument(
            field, f"too many dependencies ({len(ticket.depends_on)} > {MAX_DEPENDENCIES_PER_TICKET})"
        )
    seen: set[str] = set()
    for j, dep in enumerate(ticket.depends_on):
        shown = repr(dep[:MAX_KEY])
        if dep not in keys:
            raise InvalidArgument(f"{field}[{j}]", f"unknown ticket key {shown}")
        if dep == ticket.key:
            raise InvalidArgument(f"{field}[{j}]", f"ticket {shown} depends on itself")
        if dep in seen:
            raise InvalidArgument(f"{field}[{j}]", f"{shown} is listed twice")
        seen.add(dep)


def find_cycle(graph: dict[str, Sequence[str]]) -> list[str] | None:
    """One cycle of the graph (node -> its dependencies) in order, or None.

    Iterative depth-first search, so a 5,000-ticket chain does not hit
    Python's recursion limit.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for root in graph:
        if colour[root] != white:
            continue
        path: list[str] = [root]
        iters = [iter(graph[root])]
        colour[root] = grey
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                iters.pop()
                continue
            if colour[nxt] == grey:
                return path[path.index(nxt) :]
            if colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                iters.append(iter(graph[nxt]))
    return None


def lease_duration(requested: timedelta | None, default: timedelta) -> timedelta:
    if requested is None:
        return default
    if not MIN_LEASE <= requested <= MAX_LEASE:
        raise InvalidArgument(
            "lease_duration",
            f"must be between {int(MIN_LEASE.total_seconds())}s and {int(MAX_LEASE.total_seconds())}s",
        )
    return requested
