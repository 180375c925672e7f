"""gRPC adapters only: proto in -> domain call -> proto out, for
TelemetryService (traces, cost ledger, budgets) and the standard OTLP
TraceService/Export that fills the span store."""

from __future__ import annotations

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from swarm.telemetry.v1 import telemetry_pb2 as pb
from swarm.telemetry.v1 import telemetry_pb2_grpc as pb_grpc
from swarm_telemetry import wire
from swarm_telemetry.domain import AGENT_KEY, TENANT_KEY
from swarm_telemetry.forwarder import OtlpForwarder
from swarm_telemetry.ledger import UsageLedger
from swarm_telemetry.stores.spans import SpanStore
from swarm_telemetry.trace_tree import ticket_trace
from swarmcommon import metrics
from swarmcommon import validation as v
from swarmcommon.authz import Access, Caller, allow, current_caller
from swarmcommon.pki import SERVICES

# Who may call what (swarmcommon.authz). Agents report usage and spans for
# their token's tenant; every workload exports its spans here.
ADMIN = allow("gateway", operators=True)
ACCESS: Access = {
    "GetTicketTrace": ADMIN,
    "ListSpans": ADMIN,
    "RecordUsage": allow(agents=True),
    "GetUsageSummary": ADMIN,
    "CheckBudget": allow("gateway", operators=True, agents=True),
}
# Operators' tools (the demo, say) are traced too.
OTLP_ACCESS: Access = {"Export": allow(*SERVICES, operators=True, agents=True)}


class TelemetryServicer(pb_grpc.TelemetryServiceServicer):  # type: ignore[misc]
    def __init__(self, spans: SpanStore, ledger: UsageLedger) -> None:
        self.spans = spans
        self.ledger = ledger

    def GetTicketTrace(
        self, request: pb.GetTicketTraceRequest, context: grpc.ServicerContext
    ) -> pb.GetTicketTraceResponse:
        tenant_id = v.name_id("tenant_id", request.tenant_id)
        ticket_id = v.required_text("ticket_id", request.ticket_id, 64)
        candidates = self.spans.traces_of_ticket(tenant_id, ticket_id)
        cost = self.ledger.ticket_totals(tenant_id, ticket_id)
        return wire.ticket_trace_to_proto(ticket_trace(tenant_id, ticket_id, candidates), cost)

    def ListSpans(self, request: pb.ListSpansRequest, context: grpc.ServicerContext) -> pb.ListSpansResponse:
        page = self.spans.list_spans(wire.span_query_from_proto(request))
        return pb.ListSpansResponse(
            spans=[wire.span_to_proto(s) for s in page.items], next_page_token=page.next_page_token
        )

    def RecordUsage(
        self, request: pb.RecordUsageRequest, context: grpc.ServicerContext
    ) -> pb.RecordUsageResponse:
        caller = current_caller()  # an agent records only its own usage, in its token's tenant
        usage = wire.usage_request_from_proto(
            request, caller.tenant(request.tenant_id), caller.require_agent(request.agent_id)
        )
        record = self.ledger.record(usage)
        return pb.RecordUsageResponse(record=wire.usage_record_to_proto(record))

    def GetUsageSummary(
        self, request: pb.GetUsageSummaryRequest, context: grpc.ServicerContext
    ) -> pb.GetUsageSummaryResponse:
        return wire.summary_to_proto(self.ledger.summary(wire.summary_query_from_proto(request)))

    def CheckBudget(
        self, request: pb.CheckBudgetRequest, context: grpc.ServicerContext
    ) -> pb.CheckBudgetResponse:
        estimated = wire.estimated_cost(request)
        tenant_id = v.name_id("tenant_id", current_caller().tenant(request.tenant_id))
        return wire.budget_to_proto(self.ledger.check_budget(tenant_id, estimated))


class OtlpTraceServicer(otlp_grpc.TraceServiceServicer):  # type: ignore[misc]
    """opentelemetry.proto.collector.trace.v1.TraceService: what every stock
    OTLP exporter speaks. Bad spans are refused one by one (partial
    success); the rest of the export is stored."""

    def __init__(self, spans: SpanStore, forwarder: OtlpForwarder | None) -> None:
        self.spans = spans
        self.forwarder = forwarder

    def Export(
        self, request: otlp.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> otlp.ExportTraceServiceResponse:
        result = wire.spans_from_export(request, _span_owner(current_caller()))
        self.spans.ingest(result.accepted)
        metrics.SPANS_INGESTED.inc(len(result.accepted))
        metrics.SPANS_REJECTED.inc(len(result.rejected))
        if self.forwarder is not None:
            self.forwarder.submit(request)
        return wire.export_response(result)


def _span_owner(caller: Caller) -> dict[str, str] | None:
    """An agent's spans are its token's tenant's and its own, whatever their
    attributes claim; a workload's say whose they are themselves."""
    if caller.agent is None:
        return None
    return {TENANT_KEY: caller.agent.tenant_id, AGENT_KEY: caller.agent.agent_id}
