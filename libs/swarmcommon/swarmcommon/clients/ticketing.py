"""The ticketing service, as other services call it (agents use swarmagent's SDK)."""

from __future__ import annotations

from typing import Any

from swarm.ticketing.v1 import learning_pb2_grpc as lpb_grpc
from swarm.ticketing.v1 import marketplace_pb2_grpc as mpb_grpc
from swarm.ticketing.v1 import snapshots_pb2_grpc as spb_grpc
from swarm.ticketing.v1 import templates_pb2_grpc as tpb_grpc
from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarmcommon.clients.base import ServiceClient


class TicketingClient(ServiceClient):
    stub_class = pb_grpc.TicketingServiceStub

    def __init__(self, target: str, **options: Any) -> None:
        super().__init__(target, **options)
        # Agent templates and deployments: a second service on the same channel.
        self.templates = tpb_grpc.AgentTemplateServiceStub(self.channel.unary)
        # The template marketplace: a third.
        self.marketplace = mpb_grpc.MarketplaceServiceStub(self.channel.unary)
        # Project snapshots and rollback: a fourth.
        self.snapshots = spb_grpc.SnapshotServiceStub(self.channel.unary)
        # Learnings and conventions (and agents' lessons): a fifth.
        self.learning = lpb_grpc.LearningServiceStub(self.channel.unary)

    def release_agent_claims(
        self, tenant_id: str, agent_id: str, reason: str, request_id: str
    ) -> tuple[list[str], list[str]]:
        """Return every lease `agent_id` holds; (released, quarantined) ticket ids."""
        reply = self.stub.ReleaseAgentClaims(
            pb.ReleaseAgentClaimsRequest(
                tenant_id=tenant_id, agent_id=agent_id, reason=reason, request_id=request_id
            )
        )
        return list(reply.released_ticket_ids), list(reply.quarantined_ticket_ids)
