"""gRPC adapter only: proto in -> domain call -> proto out.

Errors are raised as SwarmError and mapped to status codes by the shared
interceptor; nothing here sets a status code by hand.
"""

from __future__ import annotations

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarm_ticketing import wire
from swarm_ticketing.claims import ClaimRequest
from swarm_ticketing.domain import MAX_REASON, lease_duration
from swarm_ticketing.leases import LeaseManager
from swarm_ticketing.merge_requests import MergeRequest, MergeRequests
from swarm_ticketing.store import TicketStore
from swarmcommon import validation as v
from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import page_size
from swarmcommon.protos import timestamp

MAX_REDRIVE = 500


class TicketingServicer(pb_grpc.TicketingServiceServicer):  # type: ignore[misc]
    def __init__(self, store: TicketStore, leases: LeaseManager) -> None:
        self.store = store
        self.leases = leases
        self.merge_requests = MergeRequests(store.db)

    # -- projects & reads ------------------------------------------------------

    def CreateProject(
        self, request: pb.CreateProjectRequest, context: grpc.ServicerContext
    ) -> pb.CreateProjectResponse:
        project, tickets = self.store.create_project(wire.project_spec_from_proto(request))
        return pb.CreateProjectResponse(
            project=wire.project_to_proto(project),
            tickets=[wire.ticket_to_proto(t) for t in tickets],
        )

    def GetProject(
        self, request: pb.GetProjectRequest, context: grpc.ServicerContext
    ) -> pb.GetProjectResponse:
        project = self.store.get_project(
            v.name_id("tenant_id", request.tenant_id),
            v.uuid_id("project_id", request.project_id),
        )
        return pb.GetProjectResponse(project=wire.project_to_proto(project))

    def ListProjects(
        self, request: pb.ListProjectsRequest, context: grpc.ServicerContext
    ) -> pb.ListProjectsResponse:
        page = self.store.list_projects(
            v.name_id("tenant_id", request.tenant_id),
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListProjectsResponse(
            projects=[wire.project_to_proto(p) for p in page.items],
            next_page_token=page.next_page_token,
        )

    def GetTicket(self, request: pb.GetTicketRequest, context: grpc.ServicerContext) -> pb.GetTicketResponse:
        ticket = self.store.get_ticket(
            v.name_id("tenant_id", request.tenant_id),
            v.uuid_id("ticket_id", request.ticket_id),
        )
        return pb.GetTicketResponse(ticket=wire.ticket_to_proto(ticket))

    def ListTickets(
        self, request: pb.ListTicketsRequest, context: grpc.ServicerContext
    ) -> pb.ListTicketsResponse:
        page = self.store.list_tickets(
            v.name_id("tenant_id", request.tenant_id),
            project_id=v.uuid_id("project_id", request.project_id) if request.project_id else None,
            state=wire.state_from_proto("state", request.state),
            role=wire.role_from_proto("role", request.role),
            page_size=page_size(request.page_size),
            page_token=request.page_token,
        )
        return pb.ListTicketsResponse(
            tickets=[wire.ticket_to_proto(t) for t in page.items],
            next_page_token=page.next_page_token,
        )

    def ListTicketEvents(
        self, request: pb.ListTicketEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListTicketEventsResponse:
        page = self.store.list_ticket_events(
            v.name_id("tenant_id", request.tenant_id),
            v.uuid_id("ticket_id", request.ticket_id),
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListTicketEventsResponse(
            events=[wire.event_to_proto(e) for e in page.items],
            next_page_token=page.next_page_token,
        )

    # -- leases ----------------------------------------------------------------

    def ClaimTicket(
        self, request: pb.ClaimTicketRequest, context: grpc.ServicerContext
    ) -> pb.ClaimTicketResponse:
        claim = self.leases.claim(
            ClaimRequest(
                tenant_id=v.name_id("tenant_id", request.tenant_id),
                agent_id=v.name_id("agent_id", request.agent_id),
                role=wire.role_from_proto("role", request.role),
                project_id=v.uuid_id("project_id", request.project_id) if request.project_id else None,
                request_id=v.optional_request_id(request.request_id),
                lease=lease_duration(wire.duration_from_proto(request), self.leases.policy.default_lease),
            )
        )
        if claim is None:
            return pb.ClaimTicketResponse()
        return pb.ClaimTicketResponse(
            ticket=wire.ticket_to_proto(claim.ticket),
            lease=wire.lease_to_proto(claim.lease),
            stage=wire.role_to_proto(claim.stage),  # type: ignore[arg-type]
        )

    def _lease_args(
        self,
        request: pb.RenewLeaseRequest
        | pb.StartWorkRequest
        | pb.SubmitWorkRequest
        | pb.ReportFailureRequest
        | pb.ReleaseClaimRequest,
    ) -> tuple[str, str, str]:
        return (
            v.name_id("tenant_id", request.tenant_id),
            v.uuid_id("ticket_id", request.ticket_id),
            v.uuid_id("claim_token", request.claim_token),
        )

    def RenewLease(
        self, request: pb.RenewLeaseRequest, context: grpc.ServicerContext
    ) -> pb.RenewLeaseResponse:
        tenant, ticket_id, token = self._lease_args(request)
        requested = lease_duration(wire.duration_from_proto(request), self.leases.policy.default_lease)
        lease = self.leases.renew(tenant, ticket_id, token, requested)
        return pb.RenewLeaseResponse(lease=wire.lease_to_proto(lease))

    def StartWork(self, request: pb.StartWorkRequest, context: grpc.ServicerContext) -> pb.StartWorkResponse:
        ticket = self.leases.start(*self._lease_args(request))
        return pb.StartWorkResponse(ticket=wire.ticket_to_proto(ticket))

    def SubmitWork(
        self, request: pb.SubmitWorkRequest, context: grpc.ServicerContext
    ) -> pb.SubmitWorkResponse:
        tenant, ticket_id, token = self._lease_args(request)
        result = wire.json_object("result_json", request.result_json)
        ticket, unblocked = self.leases.submit(tenant, ticket_id, token, result)
        return pb.SubmitWorkResponse(ticket=wire.ticket_to_proto(ticket), unblocked_ticket_ids=unblocked)

    def ReportFailure(
        self, request: pb.ReportFailureRequest, context: grpc.ServicerContext
    ) -> pb.ReportFailureResponse:
        tenant, ticket_id, token = self._lease_args(request)
        reason = v.required_text("reason", request.reason, MAX_REASON)
        details = wire.json_object("details_json", request.details_json)
        outcome = self.leases.fail(tenant, ticket_id, token, reason, details)
        return pb.ReportFailureResponse(
            ticket=wire.ticket_to_proto(outcome.ticket), quarantined=outcome.quarantined
        )

    def ReleaseClaim(
        self, request: pb.ReleaseClaimRequest, context: grpc.ServicerContext
    ) -> pb.ReleaseClaimResponse:
        ticket = self.leases.release(*self._lease_args(request))
        return pb.ReleaseClaimResponse(ticket=wire.ticket_to_proto(ticket))

    def ReleaseAgentClaims(
        self, request: pb.ReleaseAgentClaimsRequest, context: grpc.ServicerContext
    ) -> pb.ReleaseAgentClaimsResponse:
        released = self.leases.release_agent(
            v.name_id("tenant_id", request.tenant_id),
            v.name_id("agent_id", request.agent_id),
            v.bounded_text("reason", request.reason, MAX_REASON),
        )
        return pb.ReleaseAgentClaimsResponse(
            released_ticket_ids=released.released,
            quarantined_ticket_ids=released.quarantined,
        )

    # -- dead-letter queue --------------------------------------------------------

    def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: grpc.ServicerContext
    ) -> pb.ListDeadLettersResponse:
        page = self.store.list_dead_letters(
            v.name_id("tenant_id", request.tenant_id),
            v.uuid_id("project_id", request.project_id) if request.project_id else None,
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListDeadLettersResponse(
            tickets=[wire.ticket_to_proto(t) for t in page.items],
            next_page_token=page.next_page_token,
        )

    def RedriveTickets(
        self, request: pb.RedriveTicketsRequest, context: grpc.ServicerContext
    ) -> pb.RedriveTicketsResponse:
        tickets = self.store.redrive(
            v.name_id("tenant_id", request.tenant_id),
            v.uuid_ids("ticket_ids", request.ticket_ids, MAX_REDRIVE),
            v.name_id("operator", request.operator),
            v.bounded_text("reason", request.reason, MAX_REASON),
        )
        return pb.RedriveTicketsResponse(tickets=[wire.ticket_to_proto(t) for t in tickets])

    # -- merge requests --------------------------------------------------------

    def GetMergeRequest(
        self, request: pb.GetMergeRequestRequest, context: grpc.ServicerContext
    ) -> pb.GetMergeRequestResponse:
        mr = self.merge_requests.get(
            v.name_id("tenant_id", request.tenant_id), v.uuid_id("merge_request_id", request.merge_request_id)
        )
        return pb.GetMergeRequestResponse(merge_request=merge_request_to_proto(mr))

    def ListMergeRequests(
        self, request: pb.ListMergeRequestsRequest, context: grpc.ServicerContext
    ) -> pb.ListMergeRequestsResponse:
        if request.state not in MR_STATES and request.state != pb.MERGE_REQUEST_STATE_UNSPECIFIED:
            raise InvalidArgument("state", f"unknown state {request.state}")
        page = self.merge_requests.list(
            v.name_id("tenant_id", request.tenant_id),
            v.uuid_id("project_id", request.project_id) if request.project_id else None,
            v.uuid_id("ticket_id", request.ticket_id) if request.ticket_id else None,
            MR_STATES.get(request.state),
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListMergeRequestsResponse(
            merge_requests=[merge_request_to_proto(m) for m in page.items],
            next_page_token=page.next_page_token,
        )


MR_STATES = {
    pb.MERGE_REQUEST_STATE_OPEN: "open",
    pb.MERGE_REQUEST_STATE_MERGED: "merged",
    pb.MERGE_REQUEST_STATE_REJECTED: "rejected",
}


def merge_request_to_proto(mr: MergeRequest) -> pb.MergeRequest:
    return pb.MergeRequest(
        id=mr.id,
        tenant_id=mr.tenant_id,
        project_id=mr.project_id,
        ticket_id=mr.ticket_id,
        branch=mr.branch,
        commit=mr.commit,
        state=next(k for k, name in MR_STATES.items() if name == mr.state),
        merge_commit=mr.merge_commit or "",
        review_comments=mr.review_comments or "",
        author_agent_id=mr.author_agent_id or "",
        reviewer_agent_id=mr.reviewer_agent_id or "",
        create_time=timestamp(mr.created_at),
        update_time=timestamp(mr.updated_at),
    )
