"""The tracked LLM client: the official `anthropic` SDK's messages.create
with, around every call, an OpenTelemetry span per the GenAI semantic
conventions, and accounting:

- through the LLM proxy (a guest with an agent token, `api_key=` the current
  token): the proxy checks the budget, reserves, forwards and records the
  usage server-side, so nothing here owns accounting; the call carries the
  current token and the ticket's project and ticket ids for attribution;
- direct (insecure dev mode, no token): (1) a budget check that refuses
  before anything is sent and (2) the usage recorded in the telemetry cost
  ledger, idempotently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anthropic
from anthropic.types import Message
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from swarm.telemetry.v1 import telemetry_pb2 as tpb
from swarmagent import stopping
from swarmagent.usage import UsageBuffer
from swarmcommon.clients import TelemetryClient
from swarmcommon.errors import QuotaExceeded, Unavailable

tracer = trace.get_tracer("swarmagent.llm")


@dataclass(frozen=True)
class Attribution:
    """Who a call is for, as the cost ledger records it."""

    tenant_id: str
    agent_id: str = ""
    request_type: str = "other"
    project_id: str = ""
    ticket_id: str = ""


# How a call through the proxy names its project and ticket (swarm_telemetry.proxy).
PROJECT_HEADER, TICKET_HEADER = "x-swarm-project-id", "x-swarm-ticket-id"
REQUEST_ID_HEADER = "x-swarm-request-id"  # the proxy's id of the call: its ledger record's


class TrackedLLM:
    """The agent's LLM client. With `api_key` (a callable giving the agent's
    current token) `client` points at the LLM proxy, which owns accounting;
    `telemetry` is then unused. Without it, `for_ticket` views share the
    agent's usage buffer, so a record a ticket could not send outlives the ticket."""

    def __init__(
        self,
        client: anthropic.Anthropic,
        telemetry: TelemetryClient | None,
        attribution: Attribution,
        *,
        usage: UsageBuffer | None = None,
        api_key: Callable[[], str] | None = None,
    ) -> None:
        self.client = client
        self.telemetry = telemetry
        self.attribution = attribution
        self.api_key = api_key
        self.usage: UsageBuffer | None = None
        if api_key is None:
            if telemetry is None:
                raise ValueError("without the LLM proxy (api_key=) usage is recorded: telemetry is required")
            self.usage = usage if usage is not None else UsageBuffer(telemetry)
            self.usage.start()  # idempotent: the agent's one background retry

    @property
    def through_proxy(self) -> bool:
        return self.api_key is not None

    def for_ticket(self, project_id: str, ticket_id: str, request_type: str) -> TrackedLLM:
        a = self.attribution
        return TrackedLLM(
            self.client,
            self.telemetry,
            Attribution(a.tenant_id, a.agent_id, request_type, project_id, ticket_id),
            usage=self.usage,
            api_key=self.api_key,
        )

    def close(self) -> None:
        """Stop retrying usage records and send what is left (the agent is stopping)."""
        if self.usage is not None:
            self.usage.close()

    def _check_usage_backlog(self) -> None:
        # Spend the ledger cannot see escapes the budget: past the buffer's
        # bound, no new call is made until the backlog drains.
        if self.usage is not None and self.usage.is_full and not self.usage.flush():
            raise Unavailable(
                f"{self.usage.pending} earlier LLM calls are not in the cost ledger yet "
                "(telemetry unreachable); no call was made"
            )

    def _check_budget(self) -> None:
        assert self.telemetry is not None  # direct mode (see __init__)
        budget = self.telemetry.check_budget(self.attribution.tenant_id)
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
        """messages.create(**params), tracked. Direct: raises QuotaExceeded
        before the call when the tenant's monthly budget is spent, Unavailable
        when telemetry cannot be reached (or has too many records to catch up
        on). Through the proxy, its refusals are the SDK's errors (an
        over-budget call: anthropic.RateLimitError naming the budget).
        Never once the ticket's lease is gone (`stopping.LeaseGone`)."""
        stopping.check()
        if not self.through_proxy:
            self._check_usage_backlog()
            self._check_budget()
        model = str(params.get("model", ""))
        with tracer.start_as_current_span(
            f"chat {model}", kind=SpanKind.CLIENT, attributes=self._request_attributes(model, params)
        ) as span:
            # The prompt's size in tokens is known only from the answer, so
            # prompt_sent is added afterwards at the time it was sent (the
            # seed's waterfall shows "prompt_sent (2.5k tokens)").
            sent_at = time.time_ns()
            messages = len(params.get("messages", []))
            try:
                response = self._call(params, span)
            except anthropic.APIError as exc:
                span.add_event("prompt_sent", {"messages": messages}, timestamp=sent_at)
                span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                span.set_attribute("error.type", type(exc).__name__)
                raise
            answered = _response_attributes(response)
            span.set_attributes(answered)
            stopping.advanced()
            prompt = {"messages": messages, "tokens": answered["gen_ai.usage.input_tokens"]}
            span.add_event("prompt_sent", prompt, timestamp=sent_at)
            span.add_event("response_received", {"tokens": response.usage.output_tokens})
            if self.usage is not None:
                self._record(response, self.usage)
        return response

    def _call(self, params: dict[str, Any], span: trace.Span) -> Message:
        if self.api_key is None:
            direct: Message = self.client.messages.create(**params)
            return direct
        # The current token (renewed by heartbeats) for this call, and who it is for.
        a = self.attribution
        headers = {PROJECT_HEADER: a.project_id, TICKET_HEADER: a.ticket_id}
        client = self.client.with_options(
            api_key=self.api_key(), default_headers={k: v for k, v in headers.items() if v}
        )
        raw = client.messages.with_raw_response.create(**params)
        if proxy_id := raw.headers.get(REQUEST_ID_HEADER):
            span.set_attribute("swarm.llm_proxy.request_id", proxy_id)
        proxied: Message = raw.parse()
        return proxied

    def _request_attributes(self, model: str, params: dict[str, Any]) -> dict[str, str | int]:
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
        return attributes

    def _record(self, response: Message, usage: UsageBuffer) -> None:
        a = self.attribution
        called_at = Timestamp()
        called_at.FromDatetime(datetime.now(UTC))
        usage.add(
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
                cache_creation_input_tokens=response.usage.cache_creation_input_tokens or 0,
                cache_read_input_tokens=response.usage.cache_read_input_tokens or 0,
                # A record sent late still lands on the day the spend happened.
                usage_time=called_at,
            )
        )
        # Sent now when telemetry answers; otherwise the buffer's retry sends it.
        usage.flush()


def _response_attributes(response: Message) -> dict[str, Any]:
    usage = response.usage
    cache_write = usage.cache_creation_input_tokens or 0
    cache_read = usage.cache_read_input_tokens or 0
    return {
        "gen_ai.response.id": response.id,
        "gen_ai.response.model": response.model,
        "gen_ai.response.finish_reasons": [response.stop_reason or ""],
        # GenAI conventions: input tokens include the cached ones, which are
        # also given apart (the ledger keeps all four).
        "gen_ai.usage.input_tokens": usage.input_tokens + cache_write + cache_read,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_creation.input_tokens": cache_write,
        "gen_ai.usage.cache_read.input_tokens": cache_read,
    }
