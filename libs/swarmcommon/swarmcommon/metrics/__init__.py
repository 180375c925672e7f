"""Every Prometheus series Swarm exports, defined once, by service.

    from swarmcommon import metrics
    metrics.TICKET_CLAIMS.labels(outcome="claimed").inc()

Names follow Prometheus conventions: `swarm_<service>_…`, the unit in the
name (`_seconds`, `_usd`), counters end in `_total`. Label values come from
small fixed sets (enums, outcomes, model aliases); never a tenant, ticket,
agent or project id — each would make a series per id and grow without bound.

Each service has its own CollectorRegistry (`REGISTRIES`): tests run several
services in one process, and a service's /metrics shows only its own series.
swarmcommon.grpcserver serves a gRPC service's registry on `metrics_port`
(swarmcommon.metrics.serving); the gateway serves its own on GET /metrics.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from swarmcommon.db import Database
from swarmcommon.metrics.collectors import RowCounts
from swarmcommon.metrics.commits import CountAfterCommit as CountAfterCommit
from swarmcommon.metrics.commits import count_on_commit as count_on_commit

# `_created` series double every counter and histogram, and Prometheus reads
# none of them from the text format.
disable_created_metrics()  # type: ignore[no-untyped-call]

TICKETING = CollectorRegistry()
QUOTA = CollectorRegistry()
EVENTS = CollectorRegistry()
TELEMETRY = CollectorRegistry()
VMHOST = CollectorRegistry()
GATEWAY = CollectorRegistry()
# By service name (a GrpcService's domain is "swarm.<name>").
REGISTRIES: dict[str, CollectorRegistry] = {
    "ticketing": TICKETING,
    "quota": QUOTA,
    "events": EVENTS,
    "telemetry": TELEMETRY,
    "vmhost": VMHOST,
    "gateway": GATEWAY,
}

# Latencies from a local call (milliseconds) to a slow webhook endpoint (its 10+ s deadline).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# -- ticketing -------------------------------------------------------------------------

TICKET_CLAIMS = Counter(
    "swarm_ticketing_claims_total",
    "ClaimTicket answers: a ticket claimed, or none (the wait ended empty)",
    ["outcome"],
    registry=TICKETING,
)
PARKED_POLLERS = Gauge(
    "swarm_ticketing_parked_pollers",
    "ClaimTicket calls parked waiting for a ticket (long polls)",
    registry=TICKETING,
)
LEASES_EXPIRED = Counter(
    "swarm_ticketing_leases_expired_total",
    "Leases the reaper took back after they expired (each counts a failure)",
    registry=TICKETING,
)
QUARANTINES = Counter(
    "swarm_ticketing_quarantines_total",
    "Tickets quarantined (dead-lettered), by cause: failures or budget_exceeded",
    ["cause"],
    registry=TICKETING,
)
REDRIVES = Counter(
    "swarm_ticketing_redrives_total",
    "Quarantined tickets redriven by an operator",
    registry=TICKETING,
)
# Ticketing's audit entries that are series of their own (entry type ->
# counter), counted once the transaction that wrote them commits.
TICKET_AUDIT_SERIES = {
    "quarantined": QUARANTINES.labels(cause="failures"),
    "budget_exceeded": QUARANTINES.labels(cause="budget_exceeded"),
    "redriven": REDRIVES,
}

# -- quota -------------------------------------------------------------------------------

QUOTA_REJECTIONS = Counter(
    "swarm_quota_rejections_total",
    "Quota refusals answered (RESOURCE_EXHAUSTED), by resource",
    ["resource"],
    registry=QUOTA,
)

# -- events ------------------------------------------------------------------------------

WEBHOOK_DELIVERIES = Counter(
    "swarm_events_webhook_deliveries_total",
    "Webhook delivery attempts, by outcome: succeeded, http_error, timed_out, connection_error",
    ["outcome"],
    registry=EVENTS,
)
WEBHOOK_DELIVERY_SECONDS = Histogram(
    "swarm_events_webhook_delivery_duration_seconds",
    "How long one webhook delivery attempt took, connect to response (or to giving up)",
    buckets=LATENCY_BUCKETS,
    registry=EVENTS,
)
WEBHOOK_OUTCOMES = ("succeeded", "http_error", "timed_out", "connection_error")


def webhook_attempt(status_code: int | None, timed_out: bool, seconds: float) -> None:
    """One delivery attempt ended (not one the service abandoned to stop)."""
    if timed_out:
        outcome = "timed_out"
    elif status_code is None:
        outcome = "connection_error"
    else:
        outcome = "succeeded" if 200 <= status_code < 300 else "http_error"
    WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()
    WEBHOOK_DELIVERY_SECONDS.observe(seconds)


# -- telemetry ---------------------------------------------------------------------------

SPANS_INGESTED = Counter(
    "swarm_telemetry_spans_ingested_total", "Spans accepted over OTLP and stored", registry=TELEMETRY
)
SPANS_REJECTED = Counter(
    "swarm_telemetry_spans_rejected_total",
    "Spans refused over OTLP (partial success: malformed, or not the caller's to send)",
    registry=TELEMETRY,
)
LLM_CALLS = Counter(
    "swarm_telemetry_llm_calls_total",
    "LLM calls recorded in the cost ledger, by model",
    ["model"],
    registry=TELEMETRY,
)
LLM_COST_USD = Counter(
    "swarm_telemetry_llm_cost_usd_total",
    "LLM spend recorded in the cost ledger, US dollars, by model",
    ["model"],
    registry=TELEMETRY,
)
LLM_TOKENS = Counter(
    "swarm_telemetry_llm_tokens_total",
    "LLM tokens recorded in the cost ledger, by model and kind: input, output, cache_write, cache_read",
    ["model", "kind"],
    registry=TELEMETRY,
)
UNPRICED_MODEL = "unpriced"
# The ledger's token counts (its Tokens fields) by the `kind` they are counted as.
TOKEN_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_creation_input_tokens": "cache_write",
    "cache_read_input_tokens": "cache_read",
}
# A dated model id (or "-latest") is its alias: one series per model, not per release.
_DATED = re.compile(r"-(\d{8}|latest)$")


def llm_usage(model: str, priced: bool, cost_usd_micros: int, tokens: Mapping[str, int]) -> None:
    """One LLM call entered the ledger. A model missing from the price table
    is `unpriced`: the name comes from the caller, so it cannot be a label."""
    label = _DATED.sub("", model) if priced else UNPRICED_MODEL
    LLM_CALLS.labels(model=label).inc()
    LLM_COST_USD.labels(model=label).inc(cost_usd_micros / 1_000_000)
    for field, kind in TOKEN_KINDS.items():
        LLM_TOKENS.labels(model=label, kind=kind).inc(tokens.get(field, 0))


# -- vmhost ------------------------------------------------------------------------------


# A gauge no registry holds: each vmhost's /metrics server reads it from its database.
AGENTS_BY_STATE = "swarm_vmhost_agents"


def agents_by_state(db: Database, state: Any, states: Iterable[str]) -> RowCounts:
    """vmhost's agents by state, counted in its database at each scrape (a
    collector of its /metrics server: swarmcommon.grpcserver's `collectors`)."""
    return RowCounts(
        AGENTS_BY_STATE,
        "Agents on this host, by state (terminated ones included)",
        "state",
        db,
        state,
        states,
    )


HEALING_ACTIONS = Counter(
    "swarm_vmhost_healing_actions_total",
    "Self-healing steps taken, by health check, action and outcome",
    ["check", "action", "outcome"],
    registry=VMHOST,
)


def healed(check: str, action: str, outcome: str) -> None:
    HEALING_ACTIONS.labels(check=check, action=action, outcome=outcome).inc()


# -- gateway -----------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "swarm_gateway_http_requests_total",
    "HTTP requests answered, by method, route template and status class (2xx, 4xx, …)",
    ["method", "route", "status_class"],
    registry=GATEWAY,
)
HTTP_REQUEST_SECONDS = Histogram(
    "swarm_gateway_http_request_duration_seconds",
    "HTTP request latency, request received to response sent, by method and route template",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
    registry=GATEWAY,
)

# Series of a fixed label set start at 0, so that rate() and alerts see them
# before the first event (an absent series is not a zero).
for _outcome in ("claimed", "empty"):
    TICKET_CLAIMS.labels(outcome=_outcome)
for _outcome in WEBHOOK_OUTCOMES:
    WEBHOOK_DELIVERIES.labels(outcome=_outcome)
