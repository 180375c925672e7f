"""The tracked LLM client: the official `anthropic` SDK's messages.create
with, around every call, (1) a budget check that refuses before anything is
sent, (2) an OpenTelemetry span per the GenAI semantic conventions, and
(3) the usage recorded in the telemetry cost ledger, idempotently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import anthropic
import grpc
from anthropic.types import Message
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from swarm.telemetry.v1 import telemetry_pb2 as tpb
from swarm.telemetry.v1 import telemetry_pb2_grpc as tpb_grpc
from swarmcommon.errors import QuotaExceeded
from swarmcommon.grpcclient import error_from_rpc

log = logging.getLogger(__name__)
tracer = trace.get_tracer("swarmagent.llm")


@dataclass(frozen=True)
class Attribution:
    """Who a call is for, as the cost ledger records it."""

    tenant_id: str
    agent_id: str = ""
    request_type: str = "other"
    project_id: str = ""
    ticket_id: str = ""


class TrackedLLM:
    def __init__(
        self,
        client: anthropic.Anthropic,
        telemetry: tpb_grpc.TelemetryServiceStub,
        attribution: Attribution,
        timeout: float = 10.0,
    ) -> None:
        self.client = client
        self.telemetry = telemetry
        self.attribution = attribution
        self.timeout = timeout
        # Records the ledger could not take yet; sent again before the next
        # call (RecordUsage is idempotent on the message id).
        self.pending: list[tpb.RecordUsageRequest] = []

    def for_ticket(self, project_id: str, ticket_id: str, request_type: str) -> TrackedLLM:
        a = self.attribution
        return TrackedLLM(
            self.client,
            self.telemetry,
            Attribution(a.tenant_id, a.agent_id, request_type, project_id, ticket_id),
            self.timeout,
        )

    def _check_budget(self) -> None:
        try:
            budget = self.telemetry.CheckBudget(
                tpb.CheckBudgetRequest(tenant_id=self.attribution.tenant_id), timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        if not budget.allowed:
            reset = budget.reset_time.ToDatetime() if budget.HasField("reset_time") else None
            raise QuotaExceeded(
                "cost_usd_month",
                budget.spent_usd_micros,
                budget.limit_usd_micros,
                reset,
                f"Monthly LLM budget reached (${budget.spent_usd_micros / 1e6:.2f}/"
                f"${budget.limit_usd_micros / 1e6:.2f}); no call was made",
            )

    def create(self, **params: Any) -> Message:
        """messages.create(**params), tracked. Raises QuotaExceeded before the
        call when the tenant's monthly budget is spent."""
        self.flush()
        self._check_budget()
        model = str(params.get("model", ""))
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": model,
            "swarm.tenant_id": self.attribution.tenant_id,
        }
        if "max_tokens" in params:
            attributes["gen_ai.request.max_tokens"] = int(params["max_tokens"])
        if self.attribution.ticket_id:
            attributes["swarm.ticket_id"] = self.attribution.ticket_id
        with tracer.start_as_current_span(
            f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            span.add_event("prompt_sent", {"messages": len(params.get("messages", []))})
            try:
                response: Message = self.client.messages.create(**params)
            except anthropic.APIError as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                span.set_attribute("error.type", type(exc).__name__)
                raise
            usage = response.usage
            cache_write = usage.cache_creation_input_tokens or 0
            cache_read = usage.cache_read_input_tokens or 0
            span.set_attributes(
                {
                    "gen_ai.response.id": response.id,
                    "gen_ai.response.model": response.model,
                    "gen_ai.response.finish_reasons": [response.stop_reason or ""],
                    # GenAI conventions: input tokens include the cached ones,
                    # which are also given apart (the ledger keeps all four).
                    "gen_ai.usage.input_tokens": usage.input_tokens + cache_write + cache_read,
                    "gen_ai.usage.output_tokens": usage.output_tokens,
                    "gen_ai.usage.cache_creation.input_tokens": cache_write,
                    "gen_ai.usage.cache_read.input_tokens": cache_read,
                }
            )
            span.add_event("response_received", {"output_tokens": usage.output_tokens})
            self._record(response, cache_write, cache_read)
        return response

    def _record(self, response: Message, cache_write: int, cache_read: int) -> None:
        a = self.attribution
        self.pending.append(
            tpb.RecordUsageRequest(
                # The provider's message id: a retried record is counted once.
                request_id=response.id,
                tenant_id=a.tenant_id,
                project_id=a.project_id,
                ticket_id=a.ticket_id,
                agent_id=a.agent_id,
                request_type=a.request_type,
                provider="anthropic",
                model=response.model,
                input_tokens=response.usage.input_tokens,
                output_tokens=response.usage.output_tokens,
                cache_creation_input_tokens=cache_write,
                cache_read_input_tokens=cache_read,
            )
        )
        self.flush()

    def flush(self) -> None:
        """Send buffered usage records; the ones that fail stay buffered.
        Spend that already happened is never dropped for a ledger hiccup."""
        while self.pending:
            try:
                self.telemetry.RecordUsage(self.pending[0], timeout=self.timeout)
            except grpc.RpcError as exc:
                log.warning("usage not recorded yet; will retry", extra={"code": exc.code().name})
                return
            self.pending.pop(0)
