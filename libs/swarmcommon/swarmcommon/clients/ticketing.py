"""The ticketing service, as other services call it (agents use swarmagent's SDK)."""

from __future__ import annotations

from typing import Any

import grpc

from swarm.ticketing.v1 import learning_pb2_grpc as lpb_grpc
from swarm.ticketing.v1 import marketplace_pb2_grpc as mpb_grpc
from swarm.ticketing.v1 import snapshots_pb2_grpc as spb_grpc
from swarm.ticketing.v1 import templates_pb2_grpc as tpb_grpc
from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarmcommon.clients.base import ServiceClient
from swarmcommon.errors import SwarmError

# AuthorizeTicketSpend's answers that mean "this agent holds no lease on it".
_NOT_HELD = frozenset(
    {
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)


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

    def holds_lease(self, tenant_id: str, ticket_id: str, agent_id: str) -> bool:
        """Whether `agent_id` holds the ticket's live lease: False when another
        agent or nobody does (cancelled, released, expired) or there is no
        such ticket; raises when ticketing cannot say (unreachable)."""
        request = pb.AuthorizeTicketSpendRequest(tenant_id=tenant_id, ticket_id=ticket_id, agent_id=agent_id)
        try:
            self.stub.AuthorizeTicketSpend(request)
        except SwarmError as exc:
            if exc.code in _NOT_HELD:
                return False
            raise
        return True

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
