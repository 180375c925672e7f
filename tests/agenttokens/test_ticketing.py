"""Ticketing takes tenant and agent from the agent's token: a body naming
another tenant or agent, or a lease another agent holds, is PERMISSION_DENIED
and nothing is written."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from swarm.ticketing.v1 import learning_pb2 as lpb
from swarm.ticketing.v1 import learning_pb2_grpc as lpb_grpc
from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing.matching import MAX_PARKED_PER_AGENT
from swarmagent.client import TicketingClient
from swarmagent.credentials import AgentCredentials
from tests.agenttokens.mesh import AgentMesh
from tests.support.pki import bearer
from tests.support.status import error_info, raises_status
from tests.support.waiting import eventually

pytestmark = pytest.mark.parametrize("urls", ["sqlite", "postgres"], indirect=True)


def _agent() -> str:
    return str(uuid.uuid4())


def test_an_agent_works_a_ticket_with_its_token_alone(mesh: AgentMesh) -> None:
    mesh.project("acme", ["a"])
    me = _agent()
    stub, md = mesh.agent_ticketing(), bearer(mesh.token(me, "acme"))
    # No tenant and no agent in the body: both come from the token.
    claim = stub.ClaimTicket(pb.ClaimTicketRequest(request_id=str(uuid.uuid4())), metadata=md)
    assert claim.ticket.tenant_id == "acme" and claim.lease.agent_id == me
    ticket, token = claim.ticket.id, claim.lease.claim_token
    stub.RenewLease(pb.RenewLeaseRequest(ticket_id=ticket, claim_token=token), metadata=md)
    stub.StartWork(pb.StartWorkRequest(ticket_id=ticket, claim_token=token), metadata=md)
    done = stub.SubmitWork(
        pb.SubmitWorkRequest(ticket_id=ticket, claim_token=token, result_json="{}"), metadata=md
    ).ticket
    assert done.state == pb.TICKET_STATE_DONE
    # The body may name its own tenant and agent too.
    read = stub.GetTicket(pb.GetTicketRequest(tenant_id="acme", ticket_id=ticket), metadata=md).ticket
    assert read.state == pb.TICKET_STATE_DONE


def test_the_agent_sdk_works_tickets_over_tls_with_its_token(mesh: AgentMesh) -> None:
    mesh.project("acme", ["a"])
    me = _agent()
    credentials = AgentCredentials(mesh.token(me, "acme"), str(mesh.ca))
    target = f"127.0.0.1:{mesh.ticketing.handle.agent_port}"
    client = TicketingClient(target, "acme", me, credentials=credentials)
    try:
        claimed = client.claim()
        assert claimed is not None and claimed.lease.agent_id == me
        client.start(claimed)
        credentials.renew(mesh.token(me, "acme"))  # a heartbeat renewed it: the next call uses the new one
        assert client.submit(claimed, {"ok": True}).ticket.state == pb.TICKET_STATE_DONE
    finally:
        client.close()


def test_another_tenants_tickets_cannot_be_claimed_read_or_submitted(mesh: AgentMesh) -> None:
    theirs = mesh.project("globex", ["a", "b"])
    victim = _agent()
    held = mesh.agent_ticketing().ClaimTicket(
        pb.ClaimTicketRequest(), metadata=bearer(mesh.token(victim, "globex"))
    )
    stub, md = mesh.agent_ticketing(), bearer(mesh.token(_agent(), "acme"))
    before = mesh.snapshot()
    ticket, token = held.ticket.id, held.lease.claim_token
    attempts = {
        "claim": lambda: stub.ClaimTicket(pb.ClaimTicketRequest(tenant_id="globex"), metadata=md),
        "read": lambda: stub.GetTicket(
            pb.GetTicketRequest(tenant_id="globex", ticket_id=theirs.tickets[1].id), metadata=md
        ),
        "submit": lambda: stub.SubmitWork(
            pb.SubmitWorkRequest(tenant_id="globex", ticket_id=ticket, claim_token=token, result_json="{}"),
            metadata=md,
        ),
        "renew": lambda: stub.RenewLease(
            pb.RenewLeaseRequest(tenant_id="globex", ticket_id=ticket, claim_token=token), metadata=md
        ),
        "merge request": lambda: stub.GetMergeRequest(
            pb.GetMergeRequestRequest(tenant_id="globex", merge_request_id=str(uuid.uuid4())), metadata=md
        ),
    }
    for what, attempt in attempts.items():
        with raises_status(grpc.StatusCode.PERMISSION_DENIED, "'globex'") as caught:
            attempt()
        assert error_info(caught[0]).reason == "TENANT_MISMATCH", what
    # Under its own tenant the other tenant's ticket does not exist.
    with raises_status(grpc.StatusCode.NOT_FOUND):
        stub.GetTicket(pb.GetTicketRequest(ticket_id=theirs.tickets[1].id), metadata=md)
    with raises_status(grpc.StatusCode.NOT_FOUND):
        stub.SubmitWork(
            pb.SubmitWorkRequest(ticket_id=ticket, claim_token=token, result_json="{}"), metadata=md
        )
    assert mesh.snapshot() == before


def test_an_agent_cannot_claim_as_another_agent(mesh: AgentMesh) -> None:
    mesh.project("acme", ["a"])
    stub, md = mesh.agent_ticketing(), bearer(mesh.token(_agent(), "acme"))
    before = mesh.snapshot()
    with raises_status(grpc.StatusCode.PERMISSION_DENIED, "is not the agent of this token") as caught:
        stub.ClaimTicket(pb.ClaimTicketRequest(tenant_id="acme", agent_id=_agent()), metadata=md)
    assert error_info(caught[0]).reason == "AGENT_MISMATCH"
    assert mesh.snapshot() == before


@pytest.mark.parametrize("call", ["renew", "start", "submit", "fail", "release"])
def test_a_lease_another_agent_holds_is_refused_even_with_its_token(mesh: AgentMesh, call: str) -> None:
    mesh.project("acme", ["a"])
    holder, thief = _agent(), _agent()
    stub = mesh.agent_ticketing()
    held = stub.ClaimTicket(pb.ClaimTicketRequest(), metadata=bearer(mesh.token(holder, "acme")))
    ticket, token = held.ticket.id, held.lease.claim_token
    md = bearer(mesh.token(thief, "acme"))
    requests = {
        "renew": lambda: stub.RenewLease(
            pb.RenewLeaseRequest(ticket_id=ticket, claim_token=token), metadata=md
        ),
        "start": lambda: stub.StartWork(
            pb.StartWorkRequest(ticket_id=ticket, claim_token=token), metadata=md
        ),
        "submit": lambda: stub.SubmitWork(
            pb.SubmitWorkRequest(ticket_id=ticket, claim_token=token, result_json='{"x": 1}'), metadata=md
        ),
        "fail": lambda: stub.ReportFailure(
            pb.ReportFailureRequest(ticket_id=ticket, claim_token=token, reason="sabotage"), metadata=md
        ),
        "release": lambda: stub.ReleaseClaim(
            pb.ReleaseClaimRequest(ticket_id=ticket, claim_token=token, request_id=str(uuid.uuid4())),
            metadata=md,
        ),
    }
    before = mesh.snapshot()
    with raises_status(grpc.StatusCode.PERMISSION_DENIED, "held by another agent") as caught:
        requests[call]()
    assert error_info(caught[0]).reason == "LEASE_HELD_BY_ANOTHER_AGENT"
    assert mesh.snapshot() == before
    # The holder still works it.
    stub.StartWork(
        pb.StartWorkRequest(ticket_id=ticket, claim_token=token), metadata=bearer(mesh.token(holder, "acme"))
    )


def test_another_agents_claim_token_is_not_shown_to_an_agent(mesh: AgentMesh) -> None:
    mesh.project("acme", ["a"])
    holder = _agent()
    stub = mesh.agent_ticketing()
    held = stub.ClaimTicket(pb.ClaimTicketRequest(), metadata=bearer(mesh.token(holder, "acme")))
    request = pb.GetTicketRequest(ticket_id=held.ticket.id)
    seen = stub.GetTicket(request, metadata=bearer(mesh.token(_agent(), "acme"))).ticket
    assert seen.lease.agent_id == holder and seen.lease.claim_token == ""
    own = stub.GetTicket(request, metadata=bearer(mesh.token(holder, "acme"))).ticket
    assert own.lease.claim_token == held.lease.claim_token
    # An operator still sees the whole lease, naming the tenant itself.
    ops = mesh.operator_ticketing().GetTicket(pb.GetTicketRequest(tenant_id="acme", ticket_id=held.ticket.id))
    assert ops.ticket.lease.claim_token == held.lease.claim_token


def test_a_guest_cannot_fill_ticketing_with_parked_claims(mesh: AgentMesh) -> None:
    """A hostile guest opens long polls by the dozen to hold ticketing's
    memory (each parked call costs tens of KiB): past an agent's share they
    are refused, and another agent of the same tenant still parks."""
    stub = mesh.agent_ticketing()
    pollers = mesh.ticketing.pollers
    wait = Duration(seconds=20)
    hostile = bearer(mesh.token(_agent(), "acme"))
    calls = [
        stub.ClaimTicket.future(pb.ClaimTicketRequest(wait_duration=wait), metadata=hostile, timeout=30)
        for _ in range(MAX_PARKED_PER_AGENT)
    ]
    try:
        eventually(lambda: len(pollers) == MAX_PARKED_PER_AGENT, what="the guest's polls parked")
        with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "already has 4 ClaimTicket calls waiting"):
            stub.ClaimTicket(pb.ClaimTicketRequest(wait_duration=wait), metadata=hostile, timeout=30)
        assert len(pollers) == MAX_PARKED_PER_AGENT
        honest = stub.ClaimTicket.future(
            pb.ClaimTicketRequest(wait_duration=wait),
            metadata=bearer(mesh.token(_agent(), "acme")),
            timeout=30,
        )
        calls.append(honest)
        eventually(lambda: len(pollers) == MAX_PARKED_PER_AGENT + 1, what="another agent's poll parked")
    finally:
        for call in calls:
            call.cancel()
    eventually(lambda: len(pollers) == 0, what="the cancelled polls gone")


def test_lessons_are_only_for_the_agent_holding_the_lease(mesh: AgentMesh) -> None:
    # The attack: an agent of the same tenant asks for the lessons of a lease it
    # does not hold, with its own valid token and the other lease's claim token;
    # another tenant's agent tries the same. Each is refused and nothing is recorded.
    mesh.project("acme", ["a"])
    holder, thief = _agent(), _agent()
    mine = bearer(mesh.token(holder, "acme"))
    held = mesh.agent_ticketing().ClaimTicket(pb.ClaimTicketRequest(), metadata=mine)
    lessons = lpb_grpc.LearningServiceStub(mesh.agent_channel("ticketing"))
    ask = lpb.GetLessonsRequest(ticket_id=held.ticket.id, claim_token=held.lease.claim_token)
    before = mesh.snapshot()
    with raises_status(grpc.StatusCode.PERMISSION_DENIED, "held by another agent"):
        lessons.GetLessons(ask, metadata=bearer(mesh.token(thief, "acme")))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        lessons.GetLessons(ask, metadata=bearer(mesh.token(thief, "beta")))
    assert mesh.snapshot() == before
    lessons.GetLessons(ask, metadata=mine)  # the holder may
