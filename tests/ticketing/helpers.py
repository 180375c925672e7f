"""Small builders shared by the ticketing tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc
import pytest
from grpc_status import rpc_status

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarmcommon.grpcserver import error_details_pb2

CODER = pb.AGENT_ROLE_CODER
REVIEWER = pb.AGENT_ROLE_REVIEWER


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


def spec(
    key: str, *, priority: int = 0, depends_on: Sequence[str] = (), stages: Sequence[int] = ()
) -> pb.TicketSpec:
    return pb.TicketSpec(
        key=key, name=f"ticket {key}", priority=priority, depends_on=list(depends_on), stages=list(stages)
    )


def create_project(
    stub: pb_grpc.TicketingServiceStub, tenant_id: str, tickets: Sequence[pb.TicketSpec], name: str = "demo"
) -> pb.CreateProjectResponse:
    return stub.CreateProject(pb.CreateProjectRequest(tenant_id=tenant_id, name=name, tickets=list(tickets)))


def claim(
    stub: pb_grpc.TicketingServiceStub, tenant_id: str, agent: str, *, request_id: str = "", role: int = 0
) -> pb.ClaimTicketResponse:
    return stub.ClaimTicket(
        pb.ClaimTicketRequest(tenant_id=tenant_id, agent_id=agent, request_id=request_id, role=role)
    )


def submit(
    stub: pb_grpc.TicketingServiceStub, tenant_id: str, c: pb.ClaimTicketResponse, result: str = "{}"
) -> pb.SubmitWorkResponse:
    return stub.SubmitWork(
        pb.SubmitWorkRequest(
            tenant_id=tenant_id, ticket_id=c.ticket.id, claim_token=c.lease.claim_token, result_json=result
        )
    )


def fail(
    stub: pb_grpc.TicketingServiceStub, tenant_id: str, c: pb.ClaimTicketResponse, reason: str
) -> pb.ReportFailureResponse:
    return stub.ReportFailure(
        pb.ReportFailureRequest(
            tenant_id=tenant_id, ticket_id=c.ticket.id, claim_token=c.lease.claim_token, reason=reason
        )
    )


def get(stub: pb_grpc.TicketingServiceStub, tenant_id: str, ticket_id: str) -> pb.Ticket:
    return stub.GetTicket(pb.GetTicketRequest(tenant_id=tenant_id, ticket_id=ticket_id)).ticket


@contextmanager
def raises_status(code: grpc.StatusCode, *fragments: str) -> Iterator[list[grpc.RpcError]]:
    """Expect an RpcError with `code` whose message contains every fragment."""
    caught: list[grpc.RpcError] = []
    with pytest.raises(grpc.RpcError) as info:
        yield caught
    err = info.value
    caught.append(err)
    assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()}"
    for fragment in fragments:
        assert fragment in err.details(), f"{fragment!r} not in {err.details()!r}"


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)
    assert status is not None, "no google.rpc.Status in trailers"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info
