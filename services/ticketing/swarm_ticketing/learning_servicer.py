"""gRPC adapter for learnings and conventions (LearningService): proto in ->
store call -> proto out. Agents ask for the lessons of a lease they hold;
the gateway and operators list and curate."""

from __future__ import annotations

from typing import Any

import grpc
from sqlalchemy.engine import Row

from swarm.ticketing.v1 import learning_pb2 as lpb
from swarm.ticketing.v1 import learning_pb2_grpc as lpb_grpc
from swarm_ticketing.learning import ConventionOrigin, LearningKind, effectiveness
from swarm_ticketing.stores.conventions import Conventions
from swarm_ticketing.stores.learnings import Learnings
from swarmcommon import validation as v
from swarmcommon.authz import Access, allow, current_caller
from swarmcommon.enums import EnumCodec
from swarmcommon.idempotency import request_key
from swarmcommon.protos import timestamp

SERVICE_NAME = "swarm.ticketing.v1.LearningService"
_MANAGE = allow("gateway", operators=True)
ACCESS: Access = {
    # An agent, in its token's tenant, for a lease it holds (checked by the store).
    "GetLessons": allow(agents=True),
    **{
        name: _MANAGE
        for name in (
            "AddConvention",
            "ListConventions",
            "DeleteConvention",
            "ListLearnings",
            "DeleteLearning",
        )
    },
}
KIND = EnumCodec(lpb.LearningKind, LearningKind)
ORIGIN = EnumCodec(lpb.ConventionOrigin, ConventionOrigin)


def learning_to_proto(r: Row[Any]) -> lpb.Learning:
    return lpb.Learning(
        id=r.id,
        project_id=r.project_id or "",
        kind=KIND.to_proto(LearningKind(r.kind)),  # type: ignore[arg-type]
        source=r.source,
        content=r.content,
        ticket_id=r.ticket_id or "",
        uses=r.uses,
        successes=r.successes,
        failures=r.failures,
        effectiveness=effectiveness(r.successes, r.failures),
        create_time=timestamp(r.created_at),
        update_time=timestamp(r.updated_at),
    )


def convention_to_proto(r: Row[Any]) -> lpb.Convention:
    return lpb.Convention(
        id=r.id,
        project_id=r.project_id or "",
        origin=ORIGIN.to_proto(ConventionOrigin(r.origin)),  # type: ignore[arg-type]
        category=r.category,
        content=r.content,
        create_time=timestamp(r.created_at),
    )


class LearningServicer(lpb_grpc.LearningServiceServicer):  # type: ignore[misc]
    def __init__(self, learnings: Learnings, conventions: Conventions) -> None:
        self.learnings = learnings
        self.conventions = conventions

    def GetLessons(
        self, request: lpb.GetLessonsRequest, context: grpc.ServicerContext
    ) -> lpb.GetLessonsResponse:
        caller = current_caller()  # an agent asks in its token's tenant, for its own lease
        section = self.learnings.lessons(
            v.name_id("tenant_id", caller.tenant(request.tenant_id)),
            v.uuid_id("ticket_id", request.ticket_id),
            v.uuid_id("claim_token", request.claim_token),
            caller.agent.agent_id if caller.agent is not None else None,
        )
        return lpb.GetLessonsResponse(
            prompt_section=section.text,
            learning_ids=section.learning_ids,
            convention_ids=section.convention_ids,
        )

    def AddConvention(
        self, request: lpb.AddConventionRequest, context: grpc.ServicerContext
    ) -> lpb.AddConventionResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        row = self.conventions.add(
            tenant, request.project_id, request.category, request.content, request_key(tenant, request)
        )
        return lpb.AddConventionResponse(convention=convention_to_proto(row))

    def ListConventions(
        self, request: lpb.ListConventionsRequest, context: grpc.ServicerContext
    ) -> lpb.ListConventionsResponse:
        page = self.conventions.page(
            v.name_id("tenant_id", request.tenant_id),
            request.project_id,
            request.page_size,
            request.page_token,
        )
        return lpb.ListConventionsResponse(
            conventions=[convention_to_proto(r) for r in page.items], next_page_token=page.next_page_token
        )

    def DeleteConvention(
        self, request: lpb.DeleteConventionRequest, context: grpc.ServicerContext
    ) -> lpb.DeleteConventionResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        self.conventions.delete(tenant, request.convention_id, request_key(tenant, request))
        return lpb.DeleteConventionResponse()

    def ListLearnings(
        self, request: lpb.ListLearningsRequest, context: grpc.ServicerContext
    ) -> lpb.ListLearningsResponse:
        page = self.learnings.page(
            v.name_id("tenant_id", request.tenant_id),
            request.project_id,
            request.page_size,
            request.page_token,
        )
        return lpb.ListLearningsResponse(
            learnings=[learning_to_proto(r) for r in page.items], next_page_token=page.next_page_token
        )

    def DeleteLearning(
        self, request: lpb.DeleteLearningRequest, context: grpc.ServicerContext
    ) -> lpb.DeleteLearningResponse:
        tenant = v.name_id("tenant_id", request.tenant_id)
        self.learnings.delete(tenant, request.learning_id, request_key(tenant, request))
        return lpb.DeleteLearningResponse()
