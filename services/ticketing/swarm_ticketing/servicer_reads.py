"""TicketingService's read RPCs beyond projects and tickets: merge requests,
and a project's progress and ETA (a mixin of TicketingServicer)."""

from __future__ import annotations

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing import wire
from swarm_ticketing.stores import estimates
from swarm_ticketing.stores.bundle import Stores
from swarmcommon import validation as v
from swarmcommon.authz import current_caller
from swarmcommon.pagination import page_size
from swarmcommon.protos import timestamp


def optional_uuid(field: str, value: str) -> str | None:
    return v.uuid_id(field, value) if value else None


class ReadRpcs:
    s: Stores

    def GetProjectProgress(
        self, request: pb.GetProjectProgressRequest, context: grpc.ServicerContext
    ) -> pb.GetProjectProgressResponse:
        p = estimates.progress(
            self.s.projects.db,
            v.name_id("tenant_id", request.tenant_id),
            v.uuid_id("project_id", request.project_id),
            self.s.projects.clock.now(),
        )
        return pb.GetProjectProgressResponse(
            project_id=p.project_id,
            ticket_count=p.ticket_count,
            done=p.done,
            in_progress=p.in_progress,
            queued=p.queued,
            quarantined=p.quarantined,
            cancelled=p.cancelled,
            percent_complete=p.percent_complete,
            remaining_minutes=p.remaining_minutes,
            critical_path_minutes=p.critical_path_minutes,
            working_agents=p.working_agents,
            eta_minutes=p.eta_minutes,
            eta_time=timestamp(p.eta),
            estimated_done=p.estimated_done,
            inside_range=p.inside_range,
        )

    # -- merge requests --------------------------------------------------------

    def GetMergeRequest(
        self, request: pb.GetMergeRequestRequest, context: grpc.ServicerContext
    ) -> pb.GetMergeRequestResponse:
        mr = self.s.merge_requests.get(
            v.name_id("tenant_id", current_caller().tenant(request.tenant_id)),
            v.uuid_id("merge_request_id", request.merge_request_id),
        )
        return pb.GetMergeRequestResponse(merge_request=wire.merge_request_to_proto(mr))

    def ListMergeRequests(
        self, request: pb.ListMergeRequestsRequest, context: grpc.ServicerContext
    ) -> pb.ListMergeRequestsResponse:
        page = self.s.merge_requests.page(
            v.name_id("tenant_id", request.tenant_id),
            optional_uuid("project_id", request.project_id),
            optional_uuid("ticket_id", request.ticket_id),
            wire.MERGE_REQUEST_STATE.from_proto("state", request.state),
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListMergeRequestsResponse(
            merge_requests=[wire.merge_request_to_proto(m) for m in page.items],
            next_page_token=page.next_page_token,
        )
