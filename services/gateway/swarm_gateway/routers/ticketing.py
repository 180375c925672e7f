"""Projects, tickets and the dead-letter queue, backed by the ticketing service.

The tenant always comes from the API key, never from the request, so a
tenant can only ever name its own objects; another tenant's id is 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm_gateway.deps import BackendsDep, CurrentCaller, Paging, RequestId
from swarm_gateway.enums import AGENT_ROLE, COLLABORATION_PATTERN, MERGE_REQUEST_STATE, TICKET_STATE
from swarm_gateway.errors import COMMON_ERRORS, ErrorBody
from swarm_gateway.models import (
    UUID_PATTERN,
    CancelRequest,
    CancelResult,
    CostCapUpdate,
    MergeRequestPage,
    MergeRequestPublic,
    MergeRequestState,
    ProjectCreate,
    ProjectCreated,
    ProjectPage,
    ProjectProgress,
    ProjectPublic,
    RedriveRequest,
    RedriveResult,
    Role,
    TicketCancel,
    TicketEventPage,
    TicketEventPublic,
    TicketPage,
    TicketPublic,
    TicketState,
    TicketUpdate,
)

router = APIRouter(prefix="/api", tags=["tickets"], responses=COMMON_ERRORS)

ProjectId = Annotated[str, Path(pattern=UUID_PATTERN)]
TicketId = Annotated[str, Path(pattern=UUID_PATTERN)]
ProjectFilter = Annotated[str | None, Query(pattern=UUID_PATTERN)]


@router.post(
    "/projects",
    status_code=status.HTTP_201_CREATED,
    response_model=ProjectCreated,
    responses={
        403: {
            "model": ErrorBody,
            "description": "The repository is not one this tenant may name (reason REPOSITORY_NOT_ALLOWED)",
        }
    },
)
def create_project(
    body: ProjectCreate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> ProjectCreated:
    reply = b.ticketing.stub.CreateProject(
        tpb.CreateProjectRequest(
            tenant_id=caller.tenant_id,
            name=body.name,
            description=body.description,
            tickets=[t.to_proto() for t in body.tickets],
            request_id=request_id,
            repository=body.repository,
            base_branch=body.base_branch,
            ticket_cost_cap_usd_micros=body.ticket_cost_cap_usd_micros,
            pattern=COLLABORATION_PATTERN.number(body.pattern) if body.pattern else 0,  # type: ignore[arg-type]
        )
    )
    return ProjectCreated(
        project=ProjectPublic.from_proto(reply.project),
        tickets=[TicketPublic.from_proto(t) for t in reply.tickets],
    )


@router.get("/projects", response_model=ProjectPage)
def list_projects(caller: CurrentCaller, b: BackendsDep, page: Paging) -> ProjectPage:
    reply = b.ticketing.stub.ListProjects(
        tpb.ListProjectsRequest(tenant_id=caller.tenant_id, page_size=page.size, page_token=page.token)
    )
    return ProjectPage(
        items=[ProjectPublic.from_proto(p) for p in reply.projects], next_page_token=reply.next_page_token
    )


@router.get("/projects/{project_id}", response_model=ProjectPublic)
def get_project(project_id: ProjectId, caller: CurrentCaller, b: BackendsDep) -> ProjectPublic:
    reply = b.ticketing.stub.GetProject(
        tpb.GetProjectRequest(tenant_id=caller.tenant_id, project_id=project_id)
    )
    return ProjectPublic.from_proto(reply.project)


@router.get("/tickets", response_model=TicketPage)
def list_tickets(
    caller: CurrentCaller,
    b: BackendsDep,
    page: Paging,
    project_id: ProjectFilter = None,
    state: TicketState | None = None,
    role: Role | None = None,
) -> TicketPage:
    reply = b.ticketing.stub.ListTickets(
        tpb.ListTicketsRequest(
            tenant_id=caller.tenant_id,
            project_id=project_id or "",
            state=TICKET_STATE.number(state),  # type: ignore[arg-type]
            role=AGENT_ROLE.number(role),  # type: ignore[arg-type]
            page_size=page.size,
            page_token=page.token,
        )
    )
    return TicketPage(
        items=[TicketPublic.from_proto(t) for t in reply.tickets], next_page_token=reply.next_page_token
    )


@router.get("/tickets/{ticket_id}", response_model=TicketPublic)
def get_ticket(ticket_id: TicketId, caller: CurrentCaller, b: BackendsDep) -> TicketPublic:
    reply = b.ticketing.stub.GetTicket(tpb.GetTicketRequest(tenant_id=caller.tenant_id, ticket_id=ticket_id))
    return TicketPublic.from_proto(reply.ticket)


@router.put("/tickets/{ticket_id}/cost-cap", response_model=TicketPublic)
def set_ticket_cost_cap(
    ticket_id: TicketId, body: CostCapUpdate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> TicketPublic:
    """Set (null: clear) the ticket's own LLM cost cap. A ticket held for its
    budget (quarantine_cause budget_exceeded) is then redriven to run again."""
    reply = b.ticketing.stub.SetTicketCostCap(
        tpb.SetTicketCostCapRequest(
            tenant_id=caller.tenant_id,
            ticket_id=ticket_id,
            cost_cap_usd_micros=body.cost_cap_usd_micros,
            operator=f"api-key:{caller.api_key_id}",
            reason=body.reason,
            request_id=request_id,
        )
    )
    return TicketPublic.from_proto(reply.ticket)


@router.get("/tickets/{ticket_id}/events", response_model=TicketEventPage)
def list_ticket_events(
    ticket_id: TicketId, caller: CurrentCaller, b: BackendsDep, page: Paging
) -> TicketEventPage:
    reply = b.ticketing.stub.ListTicketEvents(
        tpb.ListTicketEventsRequest(
            tenant_id=caller.tenant_id, ticket_id=ticket_id, page_size=page.size, page_token=page.token
        )
    )
    return TicketEventPage(
        items=[TicketEventPublic.from_proto(e) for e in reply.events], next_page_token=reply.next_page_token
    )


@router.get("/dead-letters", response_model=TicketPage)
def list_dead_letters(
    caller: CurrentCaller, b: BackendsDep, page: Paging, project_id: ProjectFilter = None
) -> TicketPage:
    reply = b.ticketing.stub.ListDeadLetters(
        tpb.ListDeadLettersRequest(
            tenant_id=caller.tenant_id,
            project_id=project_id or "",
            page_size=page.size,
            page_token=page.token,
        )
    )
    return TicketPage(
        items=[TicketPublic.from_proto(t) for t in reply.tickets], next_page_token=reply.next_page_token
    )


@router.get("/projects/{project_id}/progress", response_model=ProjectProgress)
def project_progress(project_id: ProjectId, caller: CurrentCaller, b: BackendsDep) -> ProjectProgress:
    """% complete, tickets by state, remaining minutes, the critical path,
    agents at work, the ETA, and how good the estimates were."""
    reply = b.ticketing.stub.GetProjectProgress(
        tpb.GetProjectProgressRequest(tenant_id=caller.tenant_id, project_id=project_id)
    )
    return ProjectProgress.from_proto(reply)


@router.patch("/tickets/{ticket_id}", response_model=TicketPublic)
def update_ticket(
    ticket_id: TicketId, body: TicketUpdate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> TicketPublic:
    """Fix a ticket nobody is working on (blocked, ready or quarantined): its
    description, priority or stages; audited. A dead letter stays in the
    queue until it is redriven."""
    reply = b.ticketing.stub.UpdateTicket(
        tpb.UpdateTicketRequest(
            tenant_id=caller.tenant_id,
            ticket_id=ticket_id,
            description=body.description,
            priority=body.priority,
            stages=[AGENT_ROLE.number(s) for s in body.stages or ()],  # type: ignore[misc]
            operator=f"api-key:{caller.api_key_id}",
            reason=body.reason,
            request_id=request_id,
        )
    )
    return TicketPublic.from_proto(reply.ticket)


@router.post("/tickets/{ticket_id}/cancel", response_model=CancelResult)
def cancel_ticket(
    ticket_id: TicketId, body: TicketCancel, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> CancelResult:
    """Stop a ticket for good: its agent's lease is revoked at once (its next
    heartbeat, submit or LLM call is refused), its open merge request closed;
    409 when others depend on it, unless `cascade` cancels them too."""
    reply = b.ticketing.stub.CancelTicket(
        tpb.CancelTicketRequest(
            tenant_id=caller.tenant_id,
            ticket_id=ticket_id,
            operator=f"api-key:{caller.api_key_id}",
            reason=body.reason,
            cascade=body.cascade,
            request_id=request_id,
        )
    )
    return CancelResult(tickets=[TicketPublic.from_proto(t) for t in reply.tickets])


@router.post("/projects/{project_id}/cancel", response_model=CancelResult)
def cancel_project(
    project_id: ProjectId, body: CancelRequest, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> CancelResult:
    """Cancel every ticket of the project that is not done yet."""
    reply = b.ticketing.stub.CancelProject(
        tpb.CancelProjectRequest(
            tenant_id=caller.tenant_id,
            project_id=project_id,
            operator=f"api-key:{caller.api_key_id}",
            reason=body.reason,
            request_id=request_id,
        )
    )
    return CancelResult(tickets=[TicketPublic.from_proto(t) for t in reply.tickets])


@router.post("/dead-letters/redrive", response_model=RedriveResult)
def redrive(
    body: RedriveRequest, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> RedriveResult:
    reply = b.ticketing.stub.RedriveTickets(
        tpb.RedriveTicketsRequest(
            tenant_id=caller.tenant_id,
            ticket_ids=body.ticket_ids,
            operator=f"api-key:{caller.api_key_id}",
            reason=body.reason,
            request_id=request_id,
        )
    )
    return RedriveResult(tickets=[TicketPublic.from_proto(t) for t in reply.tickets])


@router.get("/merge-requests", response_model=MergeRequestPage)
def list_merge_requests(
    caller: CurrentCaller,
    b: BackendsDep,
    page: Paging,
    project_id: ProjectFilter = None,
    ticket_id: Annotated[str | None, Query(pattern=UUID_PATTERN)] = None,
    state: MergeRequestState | None = None,
) -> MergeRequestPage:
    """Branches agents pushed and their way into the base branch (open, merged, rejected)."""
    reply = b.ticketing.stub.ListMergeRequests(
        tpb.ListMergeRequestsRequest(
            tenant_id=caller.tenant_id,
            project_id=project_id or "",
            ticket_id=ticket_id or "",
            state=MERGE_REQUEST_STATE.number(state),  # type: ignore[arg-type]
            page_size=page.size,
            page_token=page.token,
        )
    )
    return MergeRequestPage(
        items=[MergeRequestPublic.from_proto(m) for m in reply.merge_requests],
        next_page_token=reply.next_page_token,
    )


@router.get("/merge-requests/{merge_request_id}", response_model=MergeRequestPublic)
def get_merge_request(
    merge_request_id: Annotated[str, Path(pattern=UUID_PATTERN)], caller: CurrentCaller, b: BackendsDep
) -> MergeRequestPublic:
    reply = b.ticketing.stub.GetMergeRequest(
        tpb.GetMergeRequestRequest(tenant_id=caller.tenant_id, merge_request_id=merge_request_id)
    )
    return MergeRequestPublic.from_proto(reply.merge_request)
