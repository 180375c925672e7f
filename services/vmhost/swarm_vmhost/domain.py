"""An agent VM's rules: its states, the kinds vmhost names, and the pure
decisions (silent? hung? same request?) the stores and the monitor apply.

No SQL and no protobuf here; `stores/` applies these rules atomically and
`wire.py` translates to and from the wire.

    STARTING ──first heartbeat──▶ READY ⇄ BUSY (heartbeats say which)
        │                           │      │
        │    silent, dead, hung, or reports FAILED
        ├───────────────────────────┴──────┴──▶ FAILED ──cleaned up──▶ TERMINATED
        └───── TerminateAgent ──▶ STOPPING ──cleaned up──────────────▶ TERMINATED
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from swarmcommon.errors import InvalidArgument

MAX_TEMPLATE = 128
MAX_TICKET_ID = 64
MAX_REASON = 500
DEFAULT_TEMPLATE = "default"
DEFAULT_TERMINATE_REASON = "terminated by request"
GUEST_REPORTED_FAILURE = "the guest reported it cannot go on"


class AgentState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    FAILED = "failed"
    STOPPING = "stopping"
    TERMINATED = "terminated"


# States in which a guest runs and is watched; anything else is on its way
# out, and its heartbeats are refused.
LIVE_STATES = frozenset({AgentState.STARTING, AgentState.READY, AgentState.BUSY})
# What a guest may say about itself in a heartbeat.
REPORTABLE_STATES = frozenset({AgentState.READY, AgentState.BUSY, AgentState.FAILED})


class AgentRole(enum.StrEnum):
    CODER = "coder"
    REVIEWER = "reviewer"
    SECURITY = "security"
    TESTS = "tests"
    JUDGE = "judge"
    CLARIFIER = "clarifier"
    DECOMPOSER = "decomposer"


class DriverName(enum.StrEnum):
    NETNS = "netns"
    QEMU = "qemu"
    PROCESS = "process"
    GVISOR = "gvisor"


class Isolation(enum.StrEnum):
    """What stands between a driver's guests and the host, weakest first."""

    NONE = "none"
    NAMESPACES = "namespaces"
    USER_KERNEL = "user_kernel"
    VIRTUAL_MACHINE = "virtual_machine"


ISOLATION = {
    DriverName.PROCESS: Isolation.NONE,
    DriverName.NETNS: Isolation.NAMESPACES,
    DriverName.GVISOR: Isolation.USER_KERNEL,
    DriverName.QEMU: Isolation.VIRTUAL_MACHINE,
}


class GuestLimit(enum.StrEnum):
    MEMORY = "memory"
    CPU = "cpu"
    PIDS = "pids"


ALL_LIMITS: tuple[GuestLimit, ...] = tuple(GuestLimit)


class HealthCheck(enum.StrEnum):
    VM_HEARTBEAT = "vm_heartbeat"
    STALE_TICKETS = "stale_tickets"
    NETWORK = "network"
    SERVICES = "services"
    DATABASE = "database"
    DISK = "disk"


class HealingActionType(enum.StrEnum):
    TERMINATE_AGENT = "terminate_agent"
    RELEASE_TICKETS = "release_tickets"
    SPAWN_REPLACEMENT = "spawn_replacement"
    REBUILD_NETWORK = "rebuild_network"
    RESTART_SERVICE = "restart_service"
    CHECKPOINT_DATABASE = "checkpoint_database"
    PURGE_LOGS = "purge_logs"
    ALERT = "alert"


class HealingOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class EventType(enum.StrEnum):
    """Outbox event names, which webhooks subscribe to."""

    STARTED = "agent.started"
    FAILED = "agent.failed"
    COMPLETED = "agent.completed"
    HEALED = "agent.healed"


# -- guests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestSpec:
    """What a driver needs to start one guest."""

    agent_id: str
    tenant_id: str
    template: str
    role: str
    address: str  # the guest's IPv4 on the bridge
    prefix_len: int
    gateway: str  # the bridge's own address: the control plane as guests see it
    bridge: str
    env: Mapping[str, str]
    command: Sequence[str]
    workdir: str


@dataclass
class GuestHandle:
    """What a driver needs to find a running guest again (stored as JSON)."""

    agent_id: str
    driver: str
    pid: int | None = None
    devices: list[str] = field(default_factory=list)
    netns: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    # Limits this guest runs without (reported honestly on the agent).
    unenforced_limits: list[GuestLimit] = field(default_factory=list)
    # When `pid` started (drivers.base.process_start_time): with the pid, the
    # guest's identity. A pid whose start time differs is another process.
    pid_start_time: int | None = None


# -- agents -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agent:
    id: str
    tenant_id: str
    template: str
    role: AgentRole
    driver: DriverName
    state: AgentState
    address: str | None
    reservation_id: str | None
    ticket_id: str | None
    ticket_since: datetime | None
    state_reason: str | None
    replaces_agent_id: str | None
    handle: GuestHandle | None
    last_heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime
    terminated_at: datetime | None
    # When it stopped holding a max_vms reservation (None: it may hold one).
    reservation_settled_at: datetime | None = None

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def unenforced_limits(self) -> tuple[GuestLimit, ...]:
        return tuple(self.handle.unenforced_limits) if self.handle is not None else ()


@dataclass(frozen=True)
class SpawnRequest:
    tenant_id: str
    template: str
    role: AgentRole
    driver: DriverName | None  # None: the host's default
    request_id: str | None


@dataclass(frozen=True)
class TerminateRequest:
    tenant_id: str
    agent_id: str
    reason: str
    request_id: str | None


@dataclass(frozen=True)
class Heartbeat:
    tenant_id: str
    agent_id: str
    state: AgentState  # one of REPORTABLE_STATES
    ticket_id: str | None


@dataclass(frozen=True)
class AgentQuery:
    tenant_id: str
    state: AgentState | None
    role: AgentRole | None
    template: str | None
    page_size: int
    page_token: str


def spawn_conflict(existing: Agent, request: SpawnRequest, default_driver: DriverName) -> None:
    """A request_id names one spawn: refuse a retry that asks for something else."""
    wanted = (request.template, request.role, request.driver or default_driver)
    if (existing.template, existing.role, existing.driver) != wanted:
        raise InvalidArgument(
            "request_id",
            f"{request.request_id!r} was used to spawn agent {existing.id} "
            f"({existing.template}, {existing.role}, {existing.driver}), not this request",
        )


def terminate_conflict(first: TerminateRequest, request: TerminateRequest) -> None:
    """A request_id names one termination: refuse one for another agent or reason."""
    if (first.agent_id, first.reason) != (request.agent_id, request.reason):
        raise InvalidArgument(
            "request_id",
            f"{request.request_id!r} was used to terminate agent {first.agent_id} "
            f"(reason {first.reason!r}), not this request",
        )


def ticket_since(
    previous_ticket: str | None, previous_since: datetime | None, ticket: str | None, now: datetime
) -> datetime | None:
    """Since when an agent has been on `ticket`: kept while the heartbeats name
    the same ticket, restarted by a new one, cleared when idle."""
    if ticket is None:
        return None
    if ticket == previous_ticket and previous_since is not None:
        return previous_since
    return now


def final_reason(state: AgentState, state_reason: str | None, reason: str) -> str:
    """Why a terminated agent ended: a failure keeps its own reason."""
    return (state_reason or reason) if state == AgentState.FAILED else reason


# -- health -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthPolicy:
    heartbeat_interval: timedelta
    missed_heartbeats: int
    start_timeout: timedelta
    stale_ticket: timedelta
    lease_lost_grace: timedelta = timedelta(seconds=60)

    @property
    def silence_window(self) -> timedelta:
        return self.heartbeat_interval * self.missed_heartbeats


def silence(agent: Agent, now: datetime, policy: HealthPolicy) -> str | None:
    """Why a heartbeating guest counts as silent, or None while it is not."""
    if agent.last_heartbeat_at is not None:
        quiet = now - agent.last_heartbeat_at
        if quiet > policy.silence_window:
            return f"no heartbeat for {quiet.total_seconds():.1f}s"
        return None
    quiet = now - agent.created_at
    if quiet > policy.start_timeout:
        return f"no first heartbeat {quiet.total_seconds():.1f}s after spawn"
    return None


def stale_ticket(agent: Agent, now: datetime, policy: HealthPolicy) -> str | None:
    """Why a BUSY agent counts as hung on its ticket, or None while it is not.

    A guest whose work loop is stuck keeps heartbeating (its heartbeat thread
    is fine), so silence never catches it; only time on one ticket does."""
    if agent.state != AgentState.BUSY or agent.ticket_id is None or agent.ticket_since is None:
        return None
    busy = now - agent.ticket_since
    if busy <= policy.stale_ticket:
        return None
    return (
        f"busy on ticket {agent.ticket_id} for {_hours(busy)} "
        f"(limit {_hours(policy.stale_ticket)}) while still heartbeating"
    )


def _hours(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


@dataclass
class CheckStatus:
    """The last run of one health check."""

    healthy: bool = True
    last_run: datetime | None = None
    failures: int = 0
    detail: str = ""

    def record(self, problem: str, now: datetime) -> None:
        self.last_run = now
        self.healthy = not problem
        self.failures = self.failures + 1 if problem else 0
        self.detail = problem


# -- healing log --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealingStep:
    """One step self-healing took, as it is recorded."""

    incident_id: str
    check: HealthCheck
    action: HealingActionType
    outcome: HealingOutcome
    tenant_id: str = ""
    agent_id: str = ""
    target: str = ""
    detail: str = ""
    error: str = ""
    ticket_ids: tuple[str, ...] = ()
    replacement_agent_id: str = ""


@dataclass(frozen=True)
class HealingAction:
    id: str
    step: HealingStep
    created_at: datetime


@dataclass(frozen=True)
class HealingFilter:
    """Which healing actions to list; None means any. tenant_id None is the operator's view."""

    tenant_id: str | None = None
    check: HealthCheck | None = None
    action: HealingActionType | None = None
    outcome: HealingOutcome | None = None
    agent_id: str | None = None
    incident_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True)
class HealingCount:
    check: HealthCheck
    action: HealingActionType
    outcome: HealingOutcome
    count: int
