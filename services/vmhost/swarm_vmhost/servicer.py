"""gRPC adapter for VmHostService: proto in -> domain call -> proto out."""

from __future__ import annotations

import grpc

from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm.vmhost.v1 import vmhost_pb2_grpc as pb_grpc
from swarm_vmhost import wire
from swarm_vmhost.domain import AgentState, DriverName, HealthCheck
from swarm_vmhost.healing import Healer
from swarm_vmhost.host import VmHost
from swarm_vmhost.monitor import Monitor
from swarm_vmhost.pool import AgentPools
from swarmcommon import validation as v
from swarmcommon.authz import Access, allow, current_caller
from swarmcommon.pagination import page_size

# Newest actions shown in a healing report.
RECENT_ACTIONS = 10


# Who may call what (swarmcommon.authz). Agents only heartbeat (as
# themselves); spawning, terminating and reading the fleet is the gateway's;
# the services that accept agent tokens read the revocations.
ADMIN = allow("gateway", operators=True)
ACCESS: Access = {
    "SpawnAgent": ADMIN,
    "GetAgent": ADMIN,
    "ListAgents": ADMIN,
    "Heartbeat": allow(agents=True),
    "TerminateAgent": ADMIN,
    "ListDrivers": ADMIN,
    "GetHealingReport": ADMIN,
    "ListHealingActions": ADMIN,
    "ListRevokedAgents": allow("ticketing", "telemetry", operators=True),
    "SetAgentPool": ADMIN,
    "GetAgentPool": ADMIN,
}


class VmHostServicer(pb_grpc.VmHostServiceServicer):  # type: ignore[misc]
    def __init__(self, host: VmHost, healer: Healer, monitor: Monitor, pools: AgentPools) -> None:
        self.host = host
        self.healer = healer
        self.monitor = monitor
        self.pools = pools

    def SpawnAgent(
        self, request: pb.SpawnAgentRequest, context: grpc.ServicerContext
    ) -> pb.SpawnAgentResponse:
        agent = self.host.spawn(wire.spawn_from_proto(request))
        return pb.SpawnAgentResponse(agent=wire.agent_to_proto(agent))

    def GetAgent(self, request: pb.GetAgentRequest, context: grpc.ServicerContext) -> pb.GetAgentResponse:
        agent = self.host.agents.get(
            v.name_id("tenant_id", request.tenant_id), v.uuid_id("agent_id", request.agent_id)
        )
        return pb.GetAgentResponse(agent=wire.agent_to_proto(agent))

    def ListAgents(
        self, request: pb.ListAgentsRequest, context: grpc.ServicerContext
    ) -> pb.ListAgentsResponse:
        page = self.host.agents.list_agents(wire.agent_query_from_proto(request))
        return pb.ListAgentsResponse(
            agents=[wire.agent_to_proto(a) for a in page.items], next_page_token=page.next_page_token
        )

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        # An agent heartbeats only as itself, in its token's tenant.
        caller = current_caller()
        beat = wire.heartbeat_from_proto(
            request, caller.tenant(request.tenant_id), caller.require_agent(request.agent_id)
        )
        if beat.state == AgentState.FAILED:
            agent = self.healer.guest_failed(beat.tenant_id, beat.agent_id)
        else:
            agent = self.host.agents.heartbeat(beat)
        reply = pb.HeartbeatResponse(
            agent=wire.agent_to_proto(agent),
            heartbeat_interval=wire.duration(self.host.settings.heartbeat_interval_seconds),
        )
        minted = self.host.credentials.mint(agent) if caller.is_agent and agent.is_live else None
        if minted is not None:  # the guest's renewed token
            reply.agent_token = minted[0]
            reply.agent_token_expire_time.FromDatetime(minted[1])
        return reply

    def ListRevokedAgents(
        self, request: pb.ListRevokedAgentsRequest, context: grpc.ServicerContext
    ) -> pb.ListRevokedAgentsResponse:
        retention = self.host.credentials.retention
        since = wire.revoked_since_from_proto(request, self.host.agents.clock.now(), retention)
        return wire.revoked_to_proto(self.host.agents.revoked_since(since), retention)

    def TerminateAgent(
        self, request: pb.TerminateAgentRequest, context: grpc.ServicerContext
    ) -> pb.TerminateAgentResponse:
        agent = self.host.terminate_request(wire.terminate_from_proto(request))
        return pb.TerminateAgentResponse(agent=wire.agent_to_proto(agent))

    def ListDrivers(
        self, request: pb.ListDriversRequest, context: grpc.ServicerContext
    ) -> pb.ListDriversResponse:
        infos = []
        for name in DriverName:
            driver = self.host.drivers.get(name)
            reason = driver.probe() if driver is not None else "not registered on this host"
            unenforced = driver.unenforced_limits() if driver is not None else ()
            infos.append(
                wire.driver_info_to_proto(name, reason, name == self.host.default_driver, unenforced)
            )
        return pb.ListDriversResponse(drivers=infos)

    def GetHealingReport(
        self, request: pb.GetHealingReportRequest, context: grpc.ServicerContext
    ) -> pb.GetHealingReportResponse:
        window = wire.report_window_from_proto(request, self.host.agents.clock.now())
        operator_view = window.tenant_id is None
        return pb.GetHealingReportResponse(
            checks=[
                wire.check_status_to_proto(c, self.monitor.status[c], self.monitor.interval, operator_view)
                for c in HealthCheck
            ],
            action_counts=[wire.count_to_proto(c) for c in self.healer.log.counts(window)],
            recent_actions=[
                wire.action_to_proto(a) for a in self.healer.log.actions(window, RECENT_ACTIONS, "").items
            ],
        )

    def ListHealingActions(
        self, request: pb.ListHealingActionsRequest, context: grpc.ServicerContext
    ) -> pb.ListHealingActionsResponse:
        page = self.healer.log.actions(
            wire.healing_filter_from_proto(request), page_size(request.page_size), request.page_token
        )
        return pb.ListHealingActionsResponse(
            actions=[wire.action_to_proto(a) for a in page.items], next_page_token=page.next_page_token
        )

    def SetAgentPool(
        self, request: pb.SetAgentPoolRequest, context: grpc.ServicerContext
    ) -> pb.SetAgentPoolResponse:
        tenant_id = v.name_id("tenant_id", request.tenant_id)
        statuses = self.pools.set_pool(tenant_id, wire.pool_targets_from_proto(request))
        return pb.SetAgentPoolResponse(pool=wire.pool_to_proto(tenant_id, statuses, self.pools.max_count))

    def GetAgentPool(
        self, request: pb.GetAgentPoolRequest, context: grpc.ServicerContext
    ) -> pb.GetAgentPoolResponse:
        tenant_id = v.name_id("tenant_id", request.tenant_id)
        statuses = self.pools.get_pool(tenant_id)
        return pb.GetAgentPoolResponse(pool=wire.pool_to_proto(tenant_id, statuses, self.pools.max_count))
