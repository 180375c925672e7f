"""Learnings and codebase conventions (seed §13), backed by ticketing's
LearningService. The tenant comes from the API key: another tenant's
project, learning or convention is 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from swarm.ticketing.v1 import learning_pb2 as lpb
from swarm_gateway.deps import BackendsDep, CurrentCaller, Paging, RequestId
from swarm_gateway.errors import COMMON_ERRORS
from swarm_gateway.learning_models import (
    ConventionCreate,
    ConventionPage,
    ConventionPublic,
    Deleted,
    LearningPage,
    LearningPublic,
)
from swarm_gateway.models import UUID_PATTERN

router = APIRouter(prefix="/api", tags=["learnings"], responses=COMMON_ERRORS)

Id = Annotated[str, Path(pattern=UUID_PATTERN)]


def _conventions(b: BackendsDep, tenant_id: str, project_id: str, page: Paging) -> ConventionPage:
    reply = b.ticketing.learning.ListConventions(
        lpb.ListConventionsRequest(
            tenant_id=tenant_id, project_id=project_id, page_size=page.size, page_token=page.token
        )
    )
    return ConventionPage(
        items=[ConventionPublic.from_proto(c) for c in reply.conventions],
        next_page_token=reply.next_page_token,
    )


def _add(
    b: BackendsDep, tenant_id: str, project_id: str, body: ConventionCreate, rid: str
) -> ConventionPublic:
    reply = b.ticketing.learning.AddConvention(
        lpb.AddConventionRequest(
            tenant_id=tenant_id,
            project_id=project_id,
            category=body.category,
            content=body.content,
            request_id=rid,
        )
    )
    return ConventionPublic.from_proto(reply.convention)


@router.get("/conventions", response_model=ConventionPage)
def list_tenant_conventions(caller: CurrentCaller, b: BackendsDep, page: Paging) -> ConventionPage:
    """The conventions stated for every project of the tenant."""
    return _conventions(b, caller.tenant_id, "", page)


@router.post("/conventions", status_code=status.HTTP_201_CREATED, response_model=ConventionPublic)
def add_tenant_convention(
    body: ConventionCreate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> ConventionPublic:
    return _add(b, caller.tenant_id, "", body, request_id)


@router.get("/projects/{project_id}/conventions", response_model=ConventionPage)
def list_conventions(project_id: Id, caller: CurrentCaller, b: BackendsDep, page: Paging) -> ConventionPage:
    """The project's conventions: stated ones and those read from its repository."""
    return _conventions(b, caller.tenant_id, project_id, page)


@router.post(
    "/projects/{project_id}/conventions", status_code=status.HTTP_201_CREATED, response_model=ConventionPublic
)
def add_convention(
    project_id: Id, body: ConventionCreate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> ConventionPublic:
    """A convention agents working on the project's tickets are told."""
    return _add(b, caller.tenant_id, project_id, body, request_id)


@router.delete("/conventions/{convention_id}", response_model=Deleted)
def delete_convention(
    convention_id: Id, caller: CurrentCaller, b: BackendsDep, request_id: RequestId
) -> Deleted:
    b.ticketing.learning.DeleteConvention(
        lpb.DeleteConventionRequest(
            tenant_id=caller.tenant_id, convention_id=convention_id, request_id=request_id
        )
    )
    return Deleted(id=convention_id)


@router.get("/projects/{project_id}/learnings", response_model=LearningPage)
def list_learnings(project_id: Id, caller: CurrentCaller, b: BackendsDep, page: Paging) -> LearningPage:
    """What the project's tickets taught, most recently seen first, with how well each worked."""
    reply = b.ticketing.learning.ListLearnings(
        lpb.ListLearningsRequest(
            tenant_id=caller.tenant_id, project_id=project_id, page_size=page.size, page_token=page.token
        )
    )
    return LearningPage(
        items=[LearningPublic.from_proto(x) for x in reply.learnings], next_page_token=reply.next_page_token
    )


@router.delete("/learnings/{learning_id}", response_model=Deleted)
def delete_learning(learning_id: Id, caller: CurrentCaller, b: BackendsDep, request_id: RequestId) -> Deleted:
    """Forget a learning (it is no longer given to agents)."""
    b.ticketing.learning.DeleteLearning(
        lpb.DeleteLearningRequest(tenant_id=caller.tenant_id, learning_id=learning_id, request_id=request_id)
    )
    return Deleted(id=learning_id)
