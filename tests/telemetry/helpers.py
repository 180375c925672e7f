"""What telemetry's tests share: an agent's spans for one ticket, and a
look at the raw tables (to prove a call wrote nothing)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from opentelemetry import trace

from swarm_telemetry.tables import spans, usage_records
from tests.support.harness import TelemetryHarness

MS = 1_000_000
STEPS = [
    ("vm.restore", 2),
    ("git.clone", 2),
    ("llm.generate_code", 150),
    ("file.write", 2),
    ("git.commit", 2),
    ("git.push", 2),
]


def work_on_ticket(h: TelemetryHarness, tenant: str, ticket: str, agent: str = "coder-1") -> str:
    """What an agent's runtime emits for one ticket (the seed's span names):
    seven spans, exported with the stock OTLP exporter, with fixed durations
    (steps of 2 ms, the LLM call 150 ms) so shares of time do not depend on
    how busy the machine is. Returns the trace id."""
    provider = h.provider(**{"swarm.agent_id": agent})
    tracer = provider.get_tracer("test")
    start = time.time_ns()
    root = tracer.start_span(
        "agent.work", attributes={"swarm.tenant_id": tenant, "swarm.ticket_id": ticket}, start_time=start
    )
    under_root = trace.set_span_in_context(root)
    at = start
    for name, ms in STEPS:
        span = tracer.start_span(name, context=under_root, start_time=at)
        if name == "llm.generate_code":
            span.set_attribute("gen_ai.request.model", "m")
            span.add_event("prompt_sent", {"tokens": 2500}, timestamp=at)
            span.add_event("response_received", {"tokens": 1200}, timestamp=at + ms * MS)
        at += ms * MS
        span.end(end_time=at)
    root.end(end_time=at)
    provider.shutdown()
    return format(root.get_span_context().trace_id, "032x")


def _rows(h: TelemetryHarness, table: sa.Table) -> list[tuple[Any, ...]]:
    with h.app.db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(table).order_by(*table.primary_key.columns)).all()]


def usage_rows(h: TelemetryHarness) -> list[tuple[Any, ...]]:
    """Every row of the cost ledger, as stored."""
    return _rows(h, usage_records)


def span_rows(h: TelemetryHarness) -> list[tuple[Any, ...]]:
    """Every stored span row."""
    return _rows(h, spans)
