"""gRPC adapter for VmHostService."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm.vmhost.v1 import vmhost_pb2_grpc as pb_grpc
from swarm_vmhost.host import VmHost
from swarm_vmhost.monitor import CHECKS, Monitor
from swarm_vmhost.store import AgentRecord, HealingAction
from swarmcommon import validation as v
from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import page_size
from swarmcommon.protos import timestamp

ROLES = {n: pb.AgentRole.Value(f"AGENT_ROLE_{n.upper()}") for n in (
    "coder", "reviewer", "security", "tests", "judge", "clarifier", "decomposer"
)}  # fmt: skip
STATES = {
    "starting": pb.AGENT_STATE_STARTING,
    "ready": pb.AGENT_STATE_READY,
    "busy": pb.AGENT_STATE_BUSY,
    "failed": pb.AGENT_STATE_FAILED,
    "terminated": pb.AGENT_STATE_TERMINATED,
    # Being stopped on request: as good as terminated for callers (listed
    # after it, so a TERMINATED filter means "terminated").
    "stopping": pb.AGENT_STATE_TERMINATED,
}
DRIVERS = {"netns": pb.DRIVER_NETNS, "qemu": pb.DRIVER_QEMU, "process": pb.DRIVER_PROCESS}
ACTIONS = {n: pb.HealingActionType.Value(f"HEALING_ACTION_TYPE_{n.upper()}") for n in (
    "terminate_agent", "release_tickets", "spawn_replacement", "rebuild_network",
    "restart_service", "checkpoint_database", "purge_logs", "alert",
)}  # fmt: skip
OUTCOMES = {
    "succeeded": pb.HEALING_OUTCOME_SUCCEEDED,
    "failed": pb.HEALING_OUTCOME_FAILED,
    "skipped": pb.HEALING_OUTCOME_SKIPPED,
}


def _name(table: Mapping[str, Any], value: int, field: str) -> str | None:
    if value == 0:
        return None
    for name, number in table.items():
        if number == value:
            return name
    raise InvalidArgument(field, f"unknown value {value}")


def agent_to_proto(a: AgentRecord) -> pb.Agent:
    return pb.Agent(
        id=a.id,
        tenant_id=a.tenant_id,
        template=a.template,
        role=ROLES.get(a.role, 0),  # type: ignore[arg-type]
        driver=DRIVERS.get(a.driver, 0),  # type: ignore[arg-type]
        state=STATES[a.state],  # type: ignore[arg-type]
        address=a.address or "",
        last_heartbeat_time=timestamp(a.last_heartbeat_at),
        reservation_id=a.reservation_id or "",
        ticket_id=a.ticket_id or "",
        state_reason=a.state_reason or "",
        replaces_agent_id=a.replaces_agent_id or "",
        create_time=timestamp(a.created_at),
        update_time=timestamp(a.updated_at),
        terminate_time=timestamp(a.terminated_at),
    )


def action_to_proto(h: HealingAction) -> pb.HealingAction:
    return pb.HealingAction(
        id=h.id,
        incident_id=h.incident_id,
        check=pb.HealthCheck.Value(f"HEALTH_CHECK_{h.check.upper()}"),
        type=ACTIONS[h.action],  # type: ignore[arg-type]
        outcome=OUTCOMES[h.outcome],  # type: ignore[arg-type]
        tenant_id=h.tenant_id,
        agent_id=h.agent_id,
        target=h.target,
        detail=h.detail,
        error=h.error,
        ticket_ids=h.ticket_ids,
        replacement_agent_id=h.replacement_agent_id,
        create_time=timestamp(h.created_at),
    )


class VmHostServicer(pb_grpc.VmHostServiceServicer):  # type: ignore[misc]
    def __init__(self, host: VmHost, monitor: Monitor) -> None:
        self.host = host
        self.monitor = monitor

    def SpawnAgent(
        self, request: pb.SpawnAgentRequest, context: grpc.ServicerContext
    ) -> pb.SpawnAgentResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        template = v.name_id("template", request.template or "default")
        role = _name(ROLES, request.role, "role") or "coder"
        driver = _name(DRIVERS, request.driver, "driver") or ""
        agent = self.host.spawn(tenant, template, role, driver, v.optional_request_id(request.request_id))
        return pb.SpawnAgentResponse(agent=agent_to_proto(agent))

    def GetAgent(self, request: pb.GetAgentRequest, context: grpc.ServicerContext) -> pb.GetAgentResponse:
        agent = self.host.store.get(
            v.name_id("tenant_id", request.tenant_id), v.uuid_id("agent_id", request.agent_id)
        )
        return pb.GetAgentResponse(agent=agent_to_proto(agent))

    def ListAgents(
        self, request: pb.ListAgentsRequest, context: grpc.ServicerContext
    ) -> pb.ListAgentsResponse:
        page = self.host.store.list_agents(
            v.name_id("tenant_id", request.tenant_id),
            _name(STATES, request.state, "state"),
            _name(ROLES, request.role, "role"),
            v.bounded_text("template", request.template, 128) or None,
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListAgentsResponse(
            agents=[agent_to_proto(a) for a in page.items], next_page_token=page.next_page_token
        )

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        state = _name(STATES, request.state, "state") or "ready"
        if state not in ("ready", "busy", "failed"):
            raise InvalidArgument("state", "a guest reports READY, BUSY or FAILED")
        tenant, agent_id = v.name_id("tenant_id", request.tenant_id), v.uuid_id("agent_id", request.agent_id)
        if state == "failed":
            agent = self.host.store.get(tenant, agent_id)
            self.monitor.heal_silent_agent(agent, "the guest reported it cannot go on")
            agent = self.host.store.get(tenant, agent_id)
        else:
            ticket = v.bounded_text("ticket_id", request.ticket_id, 64) or None
            agent = self.host.store.heartbeat(tenant, agent_id, state, ticket)
        interval = Duration()
        interval.FromTimedelta(timedelta(seconds=self.host.settings.heartbeat_interval_seconds))
        return pb.HeartbeatResponse(agent=agent_to_proto(agent), heartbeat_interval=interval)

    def TerminateAgent(
        self, request: pb.TerminateAgentRequest, context: grpc.ServicerContext
    ) -> pb.TerminateAgentResponse:
        agent = self.host.store.get(
            v.name_id("tenant_id", request.tenant_id), v.uuid_id("agent_id", request.agent_id)
        )
        reason = v.bounded_text("reason", request.reason, 500) or "terminated by request"
        terminated, _ = self.host.terminate(agent, reason)
        return pb.TerminateAgentResponse(agent=agent_to_proto(terminated))

    def ListDrivers(
        self, request: pb.ListDriversRequest, context: grpc.ServicerContext
    ) -> pb.ListDriversResponse:
        infos = []
        for name, number in DRIVERS.items():
            driver = self.host.drivers.get(name)
            reason = driver.probe() if driver is not None else "not registered on this host"
            infos.append(
                pb.DriverInfo(
                    driver=number,  # type: ignore[arg-type]
                    available=reason is None,
                    reason=reason or "",
                    is_default=name == self.host.default_driver,
                )
            )
        return pb.ListDriversResponse(drivers=infos)

    def _scope(self, tenant_id: str) -> str | None:
        return v.name_id("tenant_id", tenant_id) if tenant_id else None

    def GetHealingReport(
        self, request: pb.GetHealingReportRequest, context: grpc.ServicerContext
    ) -> pb.GetHealingReportResponse:
        tenant = self._scope(request.tenant_id)
        since = request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else (
            self.host.store.clock.now() - timedelta(hours=24)
        )  # fmt: skip
        recent = self.host.store.actions(tenant, {}, since, 1000, "").items
        counts: dict[tuple[str, str, str], int] = {}
        for a in recent:
            counts[(a.check, a.action, a.outcome)] = counts.get((a.check, a.action, a.outcome), 0) + 1
        interval = Duration()
        interval.FromTimedelta(timedelta(seconds=self.monitor.interval))
        return pb.GetHealingReportResponse(
            checks=[
                pb.HealthCheckStatus(
                    check=pb.HealthCheck.Value(f"HEALTH_CHECK_{c.upper()}"),
                    healthy=st.healthy,
                    interval=interval,
                    last_run_time=timestamp(st.last_run),
                    consecutive_failure_count=st.failures,
                    detail=st.detail if tenant is None else "",
                )
                for c, st in ((c, self.monitor.status[c]) for c in CHECKS)
            ],
            action_counts=[
                pb.HealingActionCount(
                    check=pb.HealthCheck.Value(f"HEALTH_CHECK_{c.upper()}"),
                    type=ACTIONS[a],  # type: ignore[arg-type]
                    outcome=OUTCOMES[o],  # type: ignore[arg-type]
                    count=n,
                )
                for (c, a, o), n in sorted(counts.items())
            ],
            recent_actions=[action_to_proto(a) for a in recent[:10]],
        )

    def ListHealingActions(
        self, request: pb.ListHealingActionsRequest, context: grpc.ServicerContext
    ) -> pb.ListHealingActionsResponse:
        filters: dict[str, str] = {}
        if request.check not in pb.HealthCheck.values():
            raise InvalidArgument("check", f"unknown value {request.check}")
        if request.check:
            filters["check_name"] = pb.HealthCheck.Name(request.check).removeprefix("HEALTH_CHECK_").lower()
        if name := _name(ACTIONS, request.type, "type"):
            filters["action"] = name
        if name := _name(OUTCOMES, request.outcome, "outcome"):
            filters["outcome"] = name
        if request.agent_id:
            filters["agent_id"] = v.uuid_id("agent_id", request.agent_id)
        if request.incident_id:
            filters["incident_id"] = v.uuid_id("incident_id", request.incident_id)
        since = request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None
        page = self.host.store.actions(
            self._scope(request.tenant_id), filters, since, page_size(request.page_size), request.page_token
        )
        return pb.ListHealingActionsResponse(
            actions=[action_to_proto(a) for a in page.items], next_page_token=page.next_page_token
        )
