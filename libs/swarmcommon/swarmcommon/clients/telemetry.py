"""The telemetry service: the LLM cost ledger and budgets."""

from __future__ import annotations

from swarm.telemetry.v1 import telemetry_pb2 as pb
from swarm.telemetry.v1 import telemetry_pb2_grpc as pb_grpc
from swarmcommon.clients.base import ServiceClient


class TelemetryClient(ServiceClient):
    stub_class = pb_grpc.TelemetryServiceStub

    def check_budget(self, tenant_id: str, estimated_cost_usd_micros: int = 0) -> pb.CheckBudgetResponse:
        reply: pb.CheckBudgetResponse = self.stub.CheckBudget(
            pb.CheckBudgetRequest(tenant_id=tenant_id, estimated_cost_usd_micros=estimated_cost_usd_micros)
        )
        return reply

    def record_usage(self, request: pb.RecordUsageRequest) -> pb.UsageRecord:
        """Record one LLM call's usage (idempotent on request.request_id)."""
        reply: pb.RecordUsageResponse = self.stub.RecordUsage(request)
        return reply.record
