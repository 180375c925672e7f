"""Tenant isolation: another tenant's objects are NOT_FOUND and never listed."""

from __future__ import annotations

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import claim, create_project, fail, spec, tenant

pytestmark = BACKENDS


def test_other_tenants_objects_are_invisible(ticketing: TicketingHarness) -> None:
    a, b = tenant(), tenant()
    project = create_project(ticketing.stub, a, [spec("x"), spec("y")])
    c = claim(ticketing.stub, a, "agent-a")
    for _ in range(3):
        fail(ticketing.stub, a, claim(ticketing.stub, a, "agent-a2"), "bad")

    s = ticketing.stub
    ticket_id = project.tickets[0].id
    for call in [
        lambda: s.GetProject(pb.GetProjectRequest(tenant_id=b, project_id=project.project.id)),
        lambda: s.GetTicket(pb.GetTicketRequest(tenant_id=b, ticket_id=ticket_id)),
        lambda: s.ListTicketEvents(pb.ListTicketEventsRequest(tenant_id=b, ticket_id=ticket_id)),
        lambda: s.RenewLease(
            pb.RenewLeaseRequest(tenant_id=b, ticket_id=c.ticket.id, claim_token=c.lease.claim_token)
        ),
        lambda: s.StartWork(
            pb.StartWorkRequest(tenant_id=b, ticket_id=c.ticket.id, claim_token=c.lease.claim_token)
        ),
        lambda: s.ReleaseClaim(
            pb.ReleaseClaimRequest(tenant_id=b, ticket_id=c.ticket.id, claim_token=c.lease.claim_token)
        ),
        lambda: s.RedriveTickets(pb.RedriveTicketsRequest(tenant_id=b, ticket_ids=[ticket_id], operator="o")),
    ]:
        with raises_status(grpc.StatusCode.NOT_FOUND, "not found"):
            call()

    assert s.ListProjects(pb.ListProjectsRequest(tenant_id=b)).projects == []
    assert s.ListTickets(pb.ListTicketsRequest(tenant_id=b)).tickets == []
    assert s.ListTickets(pb.ListTicketsRequest(tenant_id=b, project_id=project.project.id)).tickets == []
    assert s.ListDeadLetters(pb.ListDeadLettersRequest(tenant_id=b)).tickets == []
    assert not claim(s, b, "agent-b").HasField("ticket")
    released = s.ReleaseAgentClaims(pb.ReleaseAgentClaimsRequest(tenant_id=b, agent_id="agent-a"))
    assert list(released.released_ticket_ids) == []
    # and tenant A's view is intact
    assert len(s.ListTickets(pb.ListTicketsRequest(tenant_id=a)).tickets) == 2


def test_page_token_of_one_tenant_is_refused_for_another(ticketing: TicketingHarness) -> None:
    a, b = tenant(), tenant()
    create_project(ticketing.stub, a, [spec(str(i)) for i in range(3)])
    token = ticketing.stub.ListTickets(pb.ListTicketsRequest(tenant_id=a, page_size=1)).next_page_token
    assert token
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "page_token"):
        ticketing.stub.ListTickets(pb.ListTicketsRequest(tenant_id=b, page_size=1, page_token=token))
