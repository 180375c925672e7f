"""Client SDK for agents: the ticketing calls an agent makes, with request
ids set so that retries (the channel retries UNAVAILABLE) are safe."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarmcommon.grpcclient import channel


@dataclass(frozen=True)
class ClaimedTicket:
    ticket: pb.Ticket
    lease: pb.Lease
    stage: int

    @property
    def id(self) -> str:
        return str(self.ticket.id)

    @property
    def token(self) -> str:
        return str(self.lease.claim_token)

    @property
    def stage_name(self) -> str:
        return str(pb.AgentRole.Name(self.stage)).removeprefix("AGENT_ROLE_").lower()


class LeaseLost(Exception):
    """The lease is gone (expired and reassigned, or released): stop working."""


class TicketingClient:
    def __init__(self, target: str, tenant_id: str, agent_id: str, *, lease: timedelta | None = None) -> None:
        self._channel = channel(target)
        self.stub = pb_grpc.TicketingServiceStub(self._channel)
        self.tenant_id = tenant_id
        self.agent_id = agent_id
        self.lease = lease

    def close(self) -> None:
        self._channel.close()

    def _lease_duration(self) -> Duration | None:
        if self.lease is None:
            return None
        d = Duration()
        d.FromTimedelta(self.lease)
        return d

    def claim(self, role: int = pb.AGENT_ROLE_UNSPECIFIED, project_id: str = "") -> ClaimedTicket | None:
        reply = self.stub.ClaimTicket(
            pb.ClaimTicketRequest(
                tenant_id=self.tenant_id,
                agent_id=self.agent_id,
                role=role,  # type: ignore[arg-type]
                project_id=project_id,
                request_id=str(uuid.uuid4()),
                lease_duration=self._lease_duration(),
            )
        )
        if not reply.HasField("ticket"):
            return None
        return ClaimedTicket(reply.ticket, reply.lease, reply.stage)

    def _guarded(self, call: Any, request: Any) -> Any:
        try:
            return call(request)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise LeaseLost(err.details()) from err
            raise

    def renew(self, claimed: ClaimedTicket) -> pb.Lease:
        reply = self._guarded(
            self.stub.RenewLease,
            pb.RenewLeaseRequest(
                tenant_id=self.tenant_id,
                ticket_id=claimed.id,
                claim_token=claimed.token,
                lease_duration=self._lease_duration(),
            ),
        )
        lease: pb.Lease = reply.lease
        return lease

    def start(self, claimed: ClaimedTicket) -> None:
        self._guarded(
            self.stub.StartWork,
            pb.StartWorkRequest(tenant_id=self.tenant_id, ticket_id=claimed.id, claim_token=claimed.token),
        )

    def submit(self, claimed: ClaimedTicket, result: dict[str, Any]) -> pb.SubmitWorkResponse:
        reply: pb.SubmitWorkResponse = self._guarded(
            self.stub.SubmitWork,
            pb.SubmitWorkRequest(
                tenant_id=self.tenant_id,
                ticket_id=claimed.id,
                claim_token=claimed.token,
                result_json=json.dumps(result),
                request_id=str(uuid.uuid4()),
            ),
        )
        return reply

    def fail(self, claimed: ClaimedTicket, reason: str, details: dict[str, Any] | None = None) -> bool:
        reply = self._guarded(
            self.stub.ReportFailure,
            pb.ReportFailureRequest(
                tenant_id=self.tenant_id,
                ticket_id=claimed.id,
                claim_token=claimed.token,
                reason=reason[:2000],
                details_json=json.dumps(details or {}),
                request_id=str(uuid.uuid4()),
            ),
        )
        return bool(reply.quarantined)
