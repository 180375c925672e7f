"""The vmhost service: agent sandboxes and their heartbeats."""

from __future__ import annotations

from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm.vmhost.v1 import vmhost_pb2_grpc as pb_grpc
from swarmcommon.clients.base import ServiceClient


class VmHostClient(ServiceClient):
    stub_class = pb_grpc.VmHostServiceStub

    def heartbeat(
        self, tenant_id: str, agent_id: str, state: pb.AgentState, ticket_id: str = ""
    ) -> pb.HeartbeatResponse:
        reply: pb.HeartbeatResponse = self.stub.Heartbeat(
            pb.HeartbeatRequest(tenant_id=tenant_id, agent_id=agent_id, ticket_id=ticket_id, state=state)
        )
        return reply
