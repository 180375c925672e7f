"""REST resources for agents (vmhost's VMs), their healing actions, and the
tenant's target pool of agents."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, Field

from swarm.vmhost.v1 import vmhost_pb2 as vpb
from swarm_gateway.models import Request, Role, Text, ts
from swarmcommon.enums import ProtoNames

AgentState = Literal["starting", "ready", "busy", "failed", "stopping", "terminated"]
Driver = Literal["netns", "qemu", "process", "gvisor"]
Isolation = Literal["none", "namespaces", "user_kernel", "virtual_machine"]
GuestLimit = Literal["memory", "cpu", "pids"]
HealthCheck = Literal["vm_heartbeat", "stale_tickets", "network", "services", "database", "disk"]
HealingActionType = Literal[
    "terminate_agent",
    "release_tickets",
    "spawn_replacement",
    "rebuild_network",
    "restart_service",
    "checkpoint_database",
    "purge_logs",
    "alert",
]
HealingOutcome = Literal["succeeded", "failed", "skipped"]
# The widest count any host accepts per role; each host's own limit (max_count) may be lower.
MAX_POOL_COUNT = 10_000

AGENT_ROLE = ProtoNames(vpb.AgentRole)
AGENT_STATE = ProtoNames(vpb.AgentState)
DRIVER = ProtoNames(vpb.Driver)
GUEST_LIMIT = ProtoNames(vpb.GuestLimit)
HEALTH_CHECK = ProtoNames(vpb.HealthCheck)
HEALING_ACTION_TYPE = ProtoNames(vpb.HealingActionType)
HEALING_OUTCOME = ProtoNames(vpb.HealingOutcome)
# What stands between a driver's guests and the host (vmhost's ListDrivers says the same).
ISOLATION: dict[str, Isolation] = {
    "process": "none",
    "netns": "namespaces",
    "gvisor": "user_kernel",
    "qemu": "virtual_machine",
}


class AgentCreate(Request):
    role: Role
    template: Text | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$",
        description="The agent template (and so the snapshot) to start from; null: the host's default",
    )
    driver: Driver | None = Field(default=None, description="null: the strongest isolation the host can run")


class AgentPublic(BaseModel):
    id: str
    role: Role
    state: AgentState
    driver: Driver
    isolation: Isolation
    address: str | None = Field(description="The guest's address on the host's bridge; null once terminated")
    ticket_id: str | None = Field(description="The ticket it reported working on; null when idle")
    template: str
    state_reason: str | None
    replaces_agent_id: str | None = Field(description="Set when self-healing spawned it to replace another")
    unenforced_limits: list[GuestLimit] = Field(description="Limits this guest runs without")
    created_at: datetime | None
    updated_at: datetime | None
    last_heartbeat_at: datetime | None
    terminated_at: datetime | None

    @classmethod
    def from_proto(cls, a: vpb.Agent) -> AgentPublic:
        driver = DRIVER.name(a.driver)
        return cls(
            id=a.id,
            role=AGENT_ROLE.name(a.role),  # type: ignore[arg-type]
            state=AGENT_STATE.name(a.state),  # type: ignore[arg-type]
            driver=driver,  # type: ignore[arg-type]
            isolation=ISOLATION[driver],
            address=a.address or None,
            ticket_id=a.ticket_id or None,
            template=a.template,
            state_reason=a.state_reason or None,
            replaces_agent_id=a.replaces_agent_id or None,
            unenforced_limits=[GUEST_LIMIT.name(x) for x in a.unenforced_limits],  # type: ignore[misc]
            created_at=ts(a.create_time, a.HasField("create_time")),
            updated_at=ts(a.update_time, a.HasField("update_time")),
            last_heartbeat_at=ts(a.last_heartbeat_time, a.HasField("last_heartbeat_time")),
            terminated_at=ts(a.terminate_time, a.HasField("terminate_time")),
        )


class AgentPage(BaseModel):
    items: list[AgentPublic]
    next_page_token: str


class HealingActionPublic(BaseModel):
    id: str
    incident_id: str
    check: HealthCheck
    type: HealingActionType
    outcome: HealingOutcome
    agent_id: str | None
    target: str
    detail: str
    error: str | None
    ticket_ids: list[str]
    replacement_agent_id: str | None
    created_at: datetime | None

    @classmethod
    def from_proto(cls, h: vpb.HealingAction) -> HealingActionPublic:
        return cls(
            id=h.id,
            incident_id=h.incident_id,
            check=HEALTH_CHECK.name(h.check),  # type: ignore[arg-type]
            type=HEALING_ACTION_TYPE.name(h.type),  # type: ignore[arg-type]
            outcome=HEALING_OUTCOME.name(h.outcome),  # type: ignore[arg-type]
            agent_id=h.agent_id or None,
            target=h.target,
            detail=h.detail,
            error=h.error or None,
            ticket_ids=list(h.ticket_ids),
            replacement_agent_id=h.replacement_agent_id or None,
            created_at=ts(h.create_time, h.HasField("create_time")),
        )


class HealingActionPage(BaseModel):
    items: list[HealingActionPublic]
    next_page_token: str


class PoolTargetUpdate(Request):
    role: Role
    count: int = Field(ge=0, le=MAX_POOL_COUNT, description="Live agents of the role to keep; 0: none")


class AgentPoolUpdate(Request):
    targets: list[PoolTargetUpdate] = Field(
        max_length=len(get_args(Role)),
        description="The whole pool, each role at most once; roles not listed are not managed",
    )

    def to_proto(self, tenant_id: str) -> vpb.SetAgentPoolRequest:
        return vpb.SetAgentPoolRequest(
            tenant_id=tenant_id,
            targets=[
                vpb.AgentPoolTarget(role=AGENT_ROLE.number(t.role), count=t.count)  # type: ignore[arg-type]
                for t in self.targets
            ],
        )


class PoolTargetPublic(BaseModel):
    role: Role
    count: int
    live_count: int = Field(description="Live agents (starting, ready, busy) of the role now")
    detail: str | None = Field(description="Why the last pass fell short of the target (e.g. quota)")


class AgentPoolPublic(BaseModel):
    targets: list[PoolTargetPublic]
    max_count: int = Field(description="The largest count the host accepts per role")
    updated_at: datetime | None

    @classmethod
    def from_proto(cls, p: vpb.AgentPool) -> AgentPoolPublic:
        return cls(
            targets=[
                PoolTargetPublic(
                    role=AGENT_ROLE.name(t.role),  # type: ignore[arg-type]
                    count=t.count,
                    live_count=t.live_count,
                    detail=t.detail or None,
                )
                for t in p.targets
            ],
            max_count=p.max_count,
            updated_at=ts(p.update_time, p.HasField("update_time")),
        )
