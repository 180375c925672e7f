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

from swarm_ticketing.estimation import Estimate
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
    # Stopped by a person (or made pointless: an ensemble's attempt once its
    # judge chose); its lease is revoked and nothing brings it back.
    CANCELLED = "cancelled"


# States in which a ticket holds a lease.
LEASED_STATES = (TicketState.ASSIGNED, TicketState.IN_PROGRESS)
# States a ticket never leaves.
FINAL_STATES = (TicketState.DONE, TicketState.CANCELLED)
MAX_CANCEL = 100


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


# Roles that author work (a send-back returns to the nearest one before) and
# roles that check it (their `review: rejected` failure sends the ticket back).
REWORK_ROLES = (AgentRole.CODER, AgentRole.JUDGE)
CHECKING_ROLES = (AgentRole.SECURITY, AgentRole.TESTS, AgentRole.REVIEWER)


class CollaborationPattern(enum.StrEnum):
    """How a ticket's agents work together (seed §11)."""

    CUSTOM = "custom"  # the stages as listed (default [coder])
    SINGLE = "single"  # coder -> reviewer
    PIPELINE = "pipeline"  # coder -> security -> tests -> reviewer
    ENSEMBLE = "ensemble"  # N coders in parallel -> judge -> reviewer


# The ticket's own stages under each pattern; an ensemble's coders are its
# attempts (tickets of their own, see stores/ensembles.py).
PATTERN_STAGES: dict[CollaborationPattern, tuple[AgentRole, ...]] = {
    CollaborationPattern.SINGLE: (AgentRole.CODER, AgentRole.REVIEWER),
    CollaborationPattern.PIPELINE: (AgentRole.CODER, AgentRole.SECURITY, AgentRole.TESTS, AgentRole.REVIEWER),
    CollaborationPattern.ENSEMBLE: (AgentRole.JUDGE, AgentRole.REVIEWER),
}
DEFAULT_ENSEMBLE_SIZE = 3
MIN_ENSEMBLE_SIZE, MAX_ENSEMBLE_SIZE = 2, 8
MAX_RATIONALE = 4_000


def rework_index(stages: Sequence[AgentRole], index: int) -> int | None:
    """Where a send-back from stage `index` goes: the nearest authoring stage
    before it (None: there is none, the stage is simply retried)."""
    for i in range(min(index, len(stages)) - 1, -1, -1):
        if stages[i] in REWORK_ROLES:
            return i
    return None


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
    PR_CLOSED = "pr.closed"
    CANCELLED = "ticket.cancelled"
    DESIGN_COMPLETE = "project.design_complete"


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
    # A checking stage sent the work back to its author, with its findings.
    SENT_BACK = "sent_back"
    # An ensemble's judge chose an attempt (its rationale is the entry's).
    JUDGED = "judged"
    CANCELLED = "cancelled"
    EDITED = "edited"


class ActorType(enum.StrEnum):
    AGENT = "agent"
    SYSTEM = "system"
    HUMAN = "human"


class MergeRequestState(enum.StrEnum):
    """open -> merged | rejected; a rework after a rejection reopens it."""

    OPEN = "open"
    MERGED = "merged"
    REJECTED = "rejected"
    # Its ticket was cancelled: nobody will rework or merge it.
    CLOSED = "closed"


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
    pattern: CollaborationPattern = CollaborationPattern.CUSTOM
    # An ensemble's parallel coder attempts, and how many must succeed
    # before the judge may start without waiting for the rest.
    ensemble_size: int = 0
    ensemble_quorum: int = 0

    @property
    def rows(self) -> int:
        """Tickets stored for it: itself, and an ensemble's attempts."""
        return 1 + (self.ensemble_size if self.pattern == CollaborationPattern.ENSEMBLE else 0)


@dataclass(frozen=True)
class ProjectSpec:
    tenant_id: str
    name: str
    description: str
    tickets: tuple[TicketSpec, ...]
    repository: str = ""
    base_branch: str = "main"
    ticket_cost_cap_usd_micros: int | None = None
    # The pattern of its tickets that name neither stages nor a pattern.
    pattern: CollaborationPattern = CollaborationPattern.CUSTOM


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
    pattern: CollaborationPattern = CollaborationPattern.CUSTOM
    # Set on an ensemble's coder attempts: the ensemble ticket, and which attempt.
    ensemble_ticket_id: str | None = None
    attempt: int = 0
    # Made when it was created (None before estimates); its leases' minutes once done.
    estimate: Estimate | None = None
    actual_minutes: float | None = None

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
    pattern: CollaborationPattern = CollaborationPattern.CUSTOM


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
class TicketEdit:
    """What UpdateTicket changes (None: unchanged)."""

    description: str | None = None
    priority: int | None = None
    stages: tuple[AgentRole, ...] | None = None


# States in which a ticket may be edited: nobody works on it.
EDITABLE_STATES = (TicketState.BLOCKED, TicketState.READY, TicketState.QUARANTINED)


@dataclass(frozen=True)
class EnsembleAttempt:
    """One coder attempt of an ensemble, as its judge sees it."""

    ticket_id: str
    attempt: int
    state: TicketState
    result_json: str | None
    agent_id: str | None
    last_failure_reason: str | None
    # Its branch was chosen before and rejected in review: not a choice any more.
    rejected: bool = False


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
    # A judge stage's ensemble attempts, in attempt order.
    attempts: tuple[EnsembleAttempt, ...] = ()

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


def lease_duration(requested: timedelta | None, default: timedelta) -> timedelta:
    if requested is None:
        return default
    if not MIN_LEASE <= requested <= MAX_LEASE:
        raise InvalidArgument(
            "lease_duration",
            f"must be between {int(MIN_LEASE.total_seconds())}s and {int(MAX_LEASE.total_seconds())}s",
        )
    return requested
