"""gRPC adapter only: proto in -> domain call -> proto out.

Errors are raised as SwarmError and mapped to status codes by the shared
interceptor; nothing here sets a status code by hand.
"""

from __future__ import annotations

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarm_ticketing import wire
from swarm_ticketing.domain import MAX_REASON, Claim, lease_duration
from swarm_ticketing.gitcredentials import CredentialStore, FileCredentials
from swarm_ticketing.repositories import RepositoryPolicy
from swarm_ticketing.servicer_reads import ReadRpcs, optional_uuid
from swarm_ticketing.stores.bundle import Stores
from swarm_ticketing.stores.claims import ClaimRequest
from swarmcommon import validation as v
from swarmcommon.authz import Access, allow, current_caller
from swarmcommon.errors import InvalidArgument
from swarmcommon.idempotency import fingerprint, request_key
from swarmcommon.pagination import page_size

MAX_REDRIVE = 500
__all__ = ["ACCESS", "Stores", "TicketingServicer"]

LeaseRequest = (
    pb.RenewLeaseRequest
    | pb.StartWorkRequest
    | pb.SubmitWorkRequest
    | pb.ReportFailureRequest
    | pb.ReleaseClaimRequest
)


# Who may call what (swarmcommon.authz). Agents work tickets (their token's
# tenant, their own leases); the gateway and operators administer projects.
ADMIN = allow("gateway", operators=True)
AGENT_WORK = allow(agents=True)
ACCESS: Access = {
    "CreateProject": ADMIN,
    "GetProject": ADMIN,
    "GetProjectProgress": ADMIN,
    "ListProjects": ADMIN,
    "GetTicket": allow("gateway", operators=True, agents=True),
    "ListTickets": ADMIN,
    "ListTicketEvents": ADMIN,
    "ClaimTicket": AGENT_WORK,
    "RenewLease": AGENT_WORK,
    "StartWork": AGENT_WORK,
    "SubmitWork": AGENT_WORK,
    "ReportFailure": AGENT_WORK,
    "ReleaseClaim": AGENT_WORK,
    "ReleaseAgentClaims": allow("vmhost", operators=True),
    # The LLM proxy (in telemetry) checks a ticket's lease and cap before a
    # call, and holds a ticket whose spend reached its cap; vmhost checks that
    # a guest still busy on a ticket holds its lease (a cancelled one does not).
    "AuthorizeTicketSpend": allow("telemetry", "vmhost"),
    "ReleaseForBudget": allow("telemetry"),
    "SetTicketCostCap": ADMIN,
    "ListDeadLetters": ADMIN,
    "RedriveTickets": ADMIN,
    "CancelTicket": ADMIN,
    "UpdateTicket": ADMIN,
    "CancelProject": ADMIN,
    "GetMergeRequest": allow("gateway", operators=True, agents=True),
    "ListMergeRequests": ADMIN,
    "GetClaimStats": ADMIN,
}


class TicketingServicer(ReadRpcs, pb_grpc.TicketingServiceServicer):  # type: ignore[misc]
    def __init__(
        self, stores: Stores, repositories: RepositoryPolicy, git_credentials: CredentialStore | None = None
    ) -> None:
        self.s = stores
        self.repositories = repositories
        self.git_credentials = git_credentials or FileCredentials()

    # -- projects & reads ------------------------------------------------------

    def CreateProject(
        self, request: pb.CreateProjectRequest, context: grpc.ServicerContext
    ) -> pb.CreateProjectResponse:
        spec = wire.project_spec_from_proto(request)
        self.repositories.check(spec.tenant_id, spec.repository)
        project, tickets = self.s.projects.create(spec, request_key(spec.tenant_id, request))
        return pb.CreateProjectResponse(
            project=wire.project_to_proto(project),
            tickets=[wire.ticket_to_proto(t) for t in tickets],
        )

    def GetProject(
        self, request: pb.GetProjectRequest, context: grpc.ServicerContext
    ) -> pb.GetProjectResponse:
        project = self.s.projects.get(
            v.name_id("tenant_id", request.tenant_id),
            v.uuid_id("project_id", request.project_id),
        )
        return pb.GetProjectResponse(project=wire.project_to_proto(project))

    def ListProjects(
        self, request: pb.ListProjectsRequest, context: grpc.ServicerContext
    ) -> pb.ListProjectsResponse:
        page = self.s.projects.page(
            v.name_id("tenant_id", request.tenant_id), page_size(request.page_size), request.page_token
        )
        return pb.ListProjectsResponse(
            projects=[wire.project_to_proto(p) for p in page.items],
            next_page_token=page.next_page_token,
        )

    def GetTicket(self, request: pb.GetTicketRequest, context: grpc.ServicerContext) -> pb.GetTicketResponse:
        caller = current_caller()
        ticket = self.s.tickets.get(
            v.name_id("tenant_id", caller.tenant(request.tenant_id)),
            v.uuid_id("ticket_id", request.ticket_id),
        )
        reply = pb.GetTicketResponse(ticket=wire.ticket_to_proto(ticket))
        if caller.agent is not None and ticket.lease is not None and ticket.lease.agent_id != caller.name:
            reply.ticket.lease.claim_token = ""  # another agent's lease: its token is not ours to see
        return reply

    def ListTickets(
        self, request: pb.ListTicketsRequest, context: grpc.ServicerContext
    ) -> pb.ListTicketsResponse:
        page = self.s.tickets.page(
            v.name_id("tenant_id", request.tenant_id),
            project_id=optional_uuid("project_id", request.project_id),
            state=wire.STATE.from_proto("state", request.state),
            role=wire.ROLE.from_proto("role", request.role),
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
        page = self.s.tickets.events(
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

    # ClaimTicket itself is served by longpoll.LongPollServicer, on the event
    # loop (it may wait): these are its two halves around the claim.

    def claim_request(self, request: pb.ClaimTicketRequest) -> ClaimRequest:
        request_id = v.optional_request_id(request.request_id)
        caller = current_caller()  # an agent claims for itself, in its token's tenant
        return ClaimRequest(
            tenant_id=v.name_id("tenant_id", caller.tenant(request.tenant_id)),
            agent_id=v.name_id("agent_id", caller.require_agent(request.agent_id)),
            role=wire.ROLE.from_proto("role", request.role),
            project_id=optional_uuid("project_id", request.project_id),
            request_id=request_id,
            lease=lease_duration(wire.duration_from_proto(request), self.s.claims.policy.default_lease),
            # How long to wait is not part of what is claimed: a retry may wait longer.
            fingerprint=fingerprint(request, ignore=("wait_duration",)) if request_id else None,
        )

    def claim_reply(self, claim: Claim | None) -> pb.ClaimTicketResponse:
        if claim is None:
            return pb.ClaimTicketResponse()
        lease = wire.lease_to_proto(claim.lease)
        # Only the claimant, only for this ticket's repository, only while it
        # holds the lease (a replayed claim whose lease expired or moved on
        # answers as before, without it).
        held = claim.ticket.lease
        holds = (
            held is not None
            and held.claim_token == claim.lease.claim_token
            and held.expires_at > self.s.claims.clock.now()
        )
        store = self.git_credentials
        secret = store.for_repository(claim.ticket.tenant_id, claim.ticket.repository) if holds else None
        return pb.ClaimTicketResponse(
            ticket=wire.ticket_to_proto(claim.ticket),
            lease=lease,
            stage=wire.ROLE.to_proto(claim.stage),  # type: ignore[arg-type]
            git_credential=pb.GitCredential(
                username=secret.username, password=secret.password, expire_time=lease.expire_time
            )
            if secret
            else None,
            template=wire.template_to_proto(claim.template),
            attempts=wire.attempts_to_proto(claim),
        )

    @staticmethod
    def _lease_args(request: LeaseRequest) -> tuple[str, str, str, str | None]:
        """(tenant, ticket, claim token, holder): an agent acts in its token's
        tenant and only on leases it holds (`holder`); others on any lease."""
        caller = current_caller()
        return (
            v.name_id("tenant_id", caller.tenant(request.tenant_id)),
            v.uuid_id("ticket_id", request.ticket_id),
            v.uuid_id("claim_token", request.claim_token),
            caller.agent.agent_id if caller.agent is not None else None,
        )

    def RenewLease(
        self, request: pb.RenewLeaseRequest, context: grpc.ServicerContext
    ) -> pb.RenewLeaseResponse:
        tenant, ticket_id, token, holder = self._lease_args(request)
        requested = lease_duration(wire.duration_from_proto(request), self.s.leases.policy.default_lease)
        if request.progress < 0:
            raise InvalidArgument("progress", "counts steps: 0 or more")
        lease = self.s.leases.renew(
            tenant,
            ticket_id,
            token,
            requested,
            request_key(tenant, request),
            holder=holder,
            progress=request.progress,
        )
        return pb.RenewLeaseResponse(lease=wire.lease_to_proto(lease))

    def StartWork(self, request: pb.StartWorkRequest, context: grpc.ServicerContext) -> pb.StartWorkResponse:
        tenant, ticket_id, token, holder = self._lease_args(request)
        ticket = self.s.leases.start(tenant, ticket_id, token, request_key(tenant, request), holder=holder)
        return pb.StartWorkResponse(ticket=wire.ticket_to_proto(ticket))

    def SubmitWork(
        self, request: pb.SubmitWorkRequest, context: grpc.ServicerContext
    ) -> pb.SubmitWorkResponse:
        tenant, ticket_id, token, holder = self._lease_args(request)
        result = wire.git_refs("result_json", wire.json_object("result_json", request.result_json))
        ticket, unblocked = self.s.leases.submit(
            tenant, ticket_id, token, result, request_key(tenant, request), holder=holder
        )
        return pb.SubmitWorkResponse(ticket=wire.ticket_to_proto(ticket), unblocked_ticket_ids=unblocked)

    def ReportFailure(
        self, request: pb.ReportFailureRequest, context: grpc.ServicerContext
    ) -> pb.ReportFailureResponse:
        tenant, ticket_id, token, holder = self._lease_args(request)
        reason = v.required_text("reason", request.reason, MAX_REASON)
        details = wire.git_refs("details_json", wire.json_object("details_json", request.details_json))
        outcome = self.s.leases.fail(
            tenant, ticket_id, token, reason, details, request_key(tenant, request), holder=holder
        )
        return pb.ReportFailureResponse(
            ticket=wire.ticket_to_proto(outcome.ticket), quarantined=outcome.quarantined
        )

    def ReleaseClaim(
        self, request: pb.ReleaseClaimRequest, context: grpc.ServicerContext
    ) -> pb.ReleaseClaimResponse:
        tenant, ticket_id, token, holder = self._lease_args(request)
        ticket = self.s.leases.release(tenant, ticket_id, token, request_key(tenant, request), holder=holder)
        return pb.ReleaseClaimResponse(ticket=wire.ticket_to_proto(ticket))

    def ReleaseAgentClaims(
        self, request: pb.ReleaseAgentClaimsRequest, context: grpc.ServicerContext
    ) -> pb.ReleaseAgentClaimsResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        released = self.s.lost.release_agent(
            tenant,
            v.name_id("agent_id", request.agent_id),
            v.bounded_text("reason", request.reason, MAX_REASON),
            request_key(tenant, request),
        )
        return pb.ReleaseAgentClaimsResponse(
            released_ticket_ids=released.released,
            quarantined_ticket_ids=released.quarantined,
        )

    # -- cost caps ---------------------------------------------------------------

    def AuthorizeTicketSpend(
        self, request: pb.AuthorizeTicketSpendRequest, context: grpc.ServicerContext
    ) -> pb.AuthorizeTicketSpendResponse:
        grant = self.s.cost_caps.authorize(
            v.name_id("tenant_id", request.tenant_id),
            v.uuid_id("ticket_id", request.ticket_id),
            v.name_id("agent_id", request.agent_id),
        )
        return wire.grant_to_proto(grant)

    def ReleaseForBudget(
        self, request: pb.ReleaseForBudgetRequest, context: grpc.ServicerContext
    ) -> pb.ReleaseForBudgetResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        ticket = self.s.cost_caps.release_for_budget(
            tenant,
            v.uuid_id("ticket_id", request.ticket_id),
            v.name_id("agent_id", request.agent_id),
            wire.cost_cap("spent_usd_micros", request.spent_usd_micros),
            wire.cost_cap("cost_cap_usd_micros", request.cost_cap_usd_micros),
            request_key(tenant, request),
        )
        return pb.ReleaseForBudgetResponse(ticket=wire.ticket_to_proto(ticket))

    def SetTicketCostCap(
        self, request: pb.SetTicketCostCapRequest, context: grpc.ServicerContext
    ) -> pb.SetTicketCostCapResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        ticket = self.s.cost_caps.set_cap(
            tenant,
            v.uuid_id("ticket_id", request.ticket_id),
            wire.optional_cap(request, "cost_cap_usd_micros", "cost_cap_usd_micros"),
            v.name_id("operator", request.operator),
            v.bounded_text("reason", request.reason, MAX_REASON),
            request_key(tenant, request),
        )
        return pb.SetTicketCostCapResponse(ticket=wire.ticket_to_proto(ticket))

    # -- dead-letter queue --------------------------------------------------------

    def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: grpc.ServicerContext
    ) -> pb.ListDeadLettersResponse:
        page = self.s.dead_letters.page(
            v.name_id("tenant_id", request.tenant_id),
            optional_uuid("project_id", request.project_id),
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
        tenant = v.name_id("tenant_id", request.tenant_id)
        tickets = self.s.dead_letters.redrive(
            tenant,
            v.uuid_ids("ticket_ids", request.ticket_ids, MAX_REDRIVE),
            v.name_id("operator", request.operator),
            v.bounded_text("reason", request.reason, MAX_REASON),
            request_key(tenant, request),
        )
        return pb.RedriveTicketsResponse(tickets=[wire.ticket_to_proto(t) for t in tickets])

    def CancelTicket(
        self, request: pb.CancelTicketRequest, context: grpc.ServicerContext
    ) -> pb.CancelTicketResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        tickets = self.s.cancels.cancel_ticket(
            tenant,
            v.uuid_id("ticket_id", request.ticket_id),
            v.name_id("operator", request.operator),
            v.bounded_text("reason", request.reason, MAX_REASON),
            request.cascade,
            request_key(tenant, request),
        )
        return pb.CancelTicketResponse(tickets=[wire.ticket_to_proto(t) for t in tickets])

    def UpdateTicket(
        self, request: pb.UpdateTicketRequest, context: grpc.ServicerContext
    ) -> pb.UpdateTicketResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        ticket = self.s.edits.edit(
            tenant,
            v.uuid_id("ticket_id", request.ticket_id),
            wire.ticket_edit_from_proto(request),
            v.name_id("operator", request.operator),
            v.bounded_text("reason", request.reason, MAX_REASON),
            request_key(tenant, request),
        )
        return pb.UpdateTicketResponse(ticket=wire.ticket_to_proto(ticket))

    def CancelProject(
        self, request: pb.CancelProjectRequest, context: grpc.ServicerContext
    ) -> pb.CancelProjectResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        tickets = self.s.cancels.cancel_project(
            tenant,
            v.uuid_id("project_id", request.project_id),
            v.name_id("operator", request.operator),
            v.bounded_text("reason", request.reason, MAX_REASON),
            request_key(tenant, request),
        )
        return pb.CancelProjectResponse(tickets=[wire.ticket_to_proto(t) for t in tickets])
