"""Protobuf <-> domain for vmhost, including every check on caller input.

Raw protos stop here: the servicer hands domain objects to the host and
stores and gets domain objects back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_vmhost.agent_pool import PoolStatus
from swarm_vmhost.domain import (
    DEFAULT_TEMPLATE,
    DEFAULT_TERMINATE_REASON,
    ISOLATION,
    MAX_REASON,
    MAX_TEMPLATE,
    MAX_TICKET_ID,
    REPORTABLE_STATES,
    Agent,
    AgentQuery,
    AgentRole,
    AgentState,
    CheckStatus,
    DriverName,
    GuestLimit,
    HealingAction,
    HealingActionType,
    HealingCount,
    HealingFilter,
    HealingOutcome,
    HealthCheck,
    Heartbeat,
    Isolation,
    SpawnRequest,
    TerminateRequest,
)
from swarmcommon import validation as v
from swarmcommon.enums import EnumCodec
from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import page_size
from swarmcommon.protos import timestamp

ROLE = EnumCodec(pb.AgentRole, AgentRole)
STATE = EnumCodec(pb.AgentState, AgentState)
DRIVER = EnumCodec(pb.Driver, DriverName)
ISOLATION_CODEC = EnumCodec(pb.Isolation, Isolation)
LIMIT = EnumCodec(pb.GuestLimit, GuestLimit)
CHECK = EnumCodec(pb.HealthCheck, HealthCheck)
ACTION = EnumCodec(pb.HealingActionType, HealingActionType)
OUTCOME = EnumCodec(pb.HealingOutcome, HealingOutcome)


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(seconds=seconds))
    return d


def _time(ts: Timestamp, present: bool) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if present else None


def _tenant(value: str) -> str:
    return v.name_id("tenant_id", value)


def _scope(tenant_id: str) -> str | None:
    """An empty tenant_id is the operator's view of the whole host."""
    return _tenant(tenant_id) if tenant_id else None


# -- requests -------------------------------------------------------------------------------------


def spawn_from_proto(r: pb.SpawnAgentRequest) -> SpawnRequest:
    return SpawnRequest(
        tenant_id=_tenant(r.tenant_id),
        template=v.name_id("template", r.template or DEFAULT_TEMPLATE),
        role=ROLE.from_proto("role", r.role) or AgentRole.CODER,
        driver=DRIVER.from_proto("driver", r.driver),
        request_id=v.optional_request_id(r.request_id),
    )


def terminate_from_proto(r: pb.TerminateAgentRequest) -> TerminateRequest:
    return TerminateRequest(
        tenant_id=_tenant(r.tenant_id),
        agent_id=v.uuid_id("agent_id", r.agent_id),
        reason=v.bounded_text("reason", r.reason, MAX_REASON) or DEFAULT_TERMINATE_REASON,
        request_id=v.optional_request_id(r.request_id),
    )


def heartbeat_from_proto(r: pb.HeartbeatRequest, tenant_id: str, agent_id: str) -> Heartbeat:
    """`tenant_id` and `agent_id`: the request's, or an agent caller's own
    (swarmcommon.authz.Caller.tenant / require_agent)."""
    state = STATE.from_proto("state", r.state) or AgentState.READY
    if state not in REPORTABLE_STATES:
        raise InvalidArgument("state", "a guest reports READY, BUSY or FAILED")
    return Heartbeat(
        tenant_id=_tenant(tenant_id),
        agent_id=v.uuid_id("agent_id", agent_id),
        state=state,
        ticket_id=v.bounded_text("ticket_id", r.ticket_id, MAX_TICKET_ID) or None,
    )


def revoked_since_from_proto(r: pb.ListRevokedAgentsRequest, now: datetime, retention: timedelta) -> datetime:
    """From when to list revocations: the request's start, but never before
    the oldest one a still-valid token could need."""
    oldest = now - retention
    start = _time(r.start_time, r.HasField("start_time"))
    return max(start, oldest) if start is not None else oldest


def agent_query_from_proto(r: pb.ListAgentsRequest) -> AgentQuery:
    return AgentQuery(
        tenant_id=_tenant(r.tenant_id),
        state=STATE.from_proto("state", r.state),
        role=ROLE.from_proto("role", r.role),
        template=v.bounded_text("template", r.template, MAX_TEMPLATE) or None,
        page_size=page_size(r.page_size),
        page_token=r.page_token,
    )


def healing_filter_from_proto(r: pb.ListHealingActionsRequest) -> HealingFilter:
    return HealingFilter(
        tenant_id=_scope(r.tenant_id),
        check=CHECK.from_proto("check", r.check),
        action=ACTION.from_proto("type", r.type),
        outcome=OUTCOME.from_proto("outcome", r.outcome),
        agent_id=v.uuid_id("agent_id", r.agent_id) if r.agent_id else None,
        incident_id=v.uuid_id("incident_id", r.incident_id) if r.incident_id else None,
        start_time=_time(r.start_time, r.HasField("start_time")),
        end_time=_time(r.end_time, r.HasField("end_time")),
    )


def report_window_from_proto(r: pb.GetHealingReportRequest, now: datetime) -> HealingFilter:
    """The report's scope; its window starts 24 hours ago unless asked otherwise."""
    start = _time(r.start_time, r.HasField("start_time")) or now - timedelta(hours=24)
    return HealingFilter(tenant_id=_scope(r.tenant_id), start_time=start)


# -- answers --------------------------------------------------------------------------------------


def agent_to_proto(a: Agent) -> pb.Agent:
    return pb.Agent(
        id=a.id,
        tenant_id=a.tenant_id,
        template=a.template,
        role=ROLE.to_proto(a.role),  # type: ignore[arg-type]
        driver=DRIVER.to_proto(a.driver),  # type: ignore[arg-type]
        state=STATE.to_proto(a.state),  # type: ignore[arg-type]
        address=a.address or "",
        last_heartbeat_time=timestamp(a.last_heartbeat_at),
        reservation_id=a.reservation_id or "",
        ticket_id=a.ticket_id or "",
        state_reason=a.state_reason or "",
        replaces_agent_id=a.replaces_agent_id or "",
        create_time=timestamp(a.created_at),
        update_time=timestamp(a.updated_at),
        terminate_time=timestamp(a.terminated_at),
        ticket_start_time=timestamp(a.ticket_since),
        unenforced_limits=[LIMIT.to_proto(x) for x in a.unenforced_limits],  # type: ignore[misc]
    )


def revoked_to_proto(agents: Sequence[Agent], retention: timedelta) -> pb.ListRevokedAgentsResponse:
    keep = Duration()
    keep.FromTimedelta(retention)
    return pb.ListRevokedAgentsResponse(
        agents=[
            pb.RevokedAgent(agent_id=a.id, tenant_id=a.tenant_id, revoke_time=timestamp(a.updated_at))
            for a in agents
        ],
        retention=keep,
    )


def driver_info_to_proto(
    name: DriverName, reason: str | None, is_default: bool, unenforced: Sequence[GuestLimit]
) -> pb.DriverInfo:
    return pb.DriverInfo(
        driver=DRIVER.to_proto(name),  # type: ignore[arg-type]
        available=reason is None,
        reason=reason or "",
        is_default=is_default,
        unenforced_limits=[LIMIT.to_proto(x) for x in unenforced],  # type: ignore[misc]
        isolation=ISOLATION_CODEC.to_proto(ISOLATION[name]),  # type: ignore[arg-type]
    )


def action_to_proto(h: HealingAction) -> pb.HealingAction:
    s = h.step
    return pb.HealingAction(
        id=h.id,
        incident_id=s.incident_id,
        check=CHECK.to_proto(s.check),  # type: ignore[arg-type]
        type=ACTION.to_proto(s.action),  # type: ignore[arg-type]
        outcome=OUTCOME.to_proto(s.outcome),  # type: ignore[arg-type]
        tenant_id=s.tenant_id,
        agent_id=s.agent_id,
        target=s.target,
        detail=s.detail,
        error=s.error,
        ticket_ids=list(s.ticket_ids),
        replacement_agent_id=s.replacement_agent_id,
        create_time=timestamp(h.created_at),
    )


def check_status_to_proto(
    check: HealthCheck, status: CheckStatus, interval: float, operator_view: bool
) -> pb.HealthCheckStatus:
    return pb.HealthCheckStatus(
        check=CHECK.to_proto(check),  # type: ignore[arg-type]
        healthy=status.healthy,
        interval=duration(interval),
        last_run_time=timestamp(status.last_run),
        consecutive_failure_count=status.failures,
        # Host-wide details name other tenants' agents: operators only.
        detail=status.detail if operator_view else "",
    )


def count_to_proto(c: HealingCount) -> pb.HealingActionCount:
    return pb.HealingActionCount(
        check=CHECK.to_proto(c.check),  # type: ignore[arg-type]
        type=ACTION.to_proto(c.action),  # type: ignore[arg-type]
        outcome=OUTCOME.to_proto(c.outcome),  # type: ignore[arg-type]
        count=c.count,
    )


# -- target pools ---------------------------------------------------------------------------------


def pool_targets_from_proto(r: pb.SetAgentPoolRequest) -> list[tuple[AgentRole | None, int]]:
    """(role, count) per target; agent_pool.validate_targets judges them."""
    return [(ROLE.from_proto(f"targets[{i}].role", t.role), t.count) for i, t in enumerate(r.targets)]


def pool_to_proto(tenant_id: str, statuses: Sequence[PoolStatus], max_count: int) -> pb.AgentPool:
    return pb.AgentPool(
        tenant_id=tenant_id,
        targets=[
            pb.AgentPoolTarget(
                role=ROLE.to_proto(s.target.role),  # type: ignore[arg-type]
                count=s.target.count,
                live_count=s.live_count,
                detail=s.target.detail,
            )
            for s in statuses
        ],
        max_count=max_count,
        update_time=timestamp(max((s.target.set_at for s in statuses), default=None)),
    )
