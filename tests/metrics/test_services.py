"""After a short real workload on a live mesh, each service's /metrics
(scraped over HTTP, parsed as Prometheus parses it) shows what happened:
claims, quarantines and redrives in ticketing, a quota refusal in quota,
webhook deliveries and their latency in events, spans and LLM cost in
telemetry, requests by route in the gateway — each only its own series,
and no label value is an id.

Counters live as long as the test process, so the workload is measured as
the difference between a scrape before and one after it."""

from __future__ import annotations

import os
import uuid

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from swarm.telemetry.v1 import telemetry_pb2 as telpb
from tests.metrics.scrape import Scrape, assert_bounded, metrics_url, scrape
from tests.metrics.stack import Stack
from tests.support.ticketing import claim, fail, submit
from tests.support.waiting import eventually

PREFIXES = {
    "quota": "swarm_quota_",
    "events": "swarm_events_",
    "telemetry": "swarm_telemetry_",
    "ticketing": "swarm_ticketing_",
    "gateway": "swarm_gateway_",
}
NOW = 1_700_000_000_000_000_000


def scrape_all(stack: Stack) -> dict[str, Scrape]:
    scrapes = {name: scrape(metrics_url(port)) for name, port in stack.metrics_ports.items()}
    scrapes["gateway"] = scrape(f"{stack.base_url}/metrics")
    return scrapes


def _span(tenant: str, trace_id: bytes) -> trace_pb2.Span:
    attr = common_pb2.KeyValue(key="swarm.tenant_id", value=common_pb2.AnyValue(string_value=tenant))
    return trace_pb2.Span(
        trace_id=trace_id,
        span_id=os.urandom(8),
        name="work",
        start_time_unix_nano=NOW,
        end_time_unix_nano=NOW + 1_000_000,
        attributes=[attr],
    )


def _workload(stack: Stack, tenant: str) -> str:
    """A tenant's day: an empty claim, a project, a ticket failed into
    quarantine and redriven, then claimed and submitted; a project over
    quota; LLM calls and spans. Returns the ticket's id."""
    key = stack.tenant_with_key(tenant, tickets_per_day=1)
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    assert not claim(stack.ticketing, tenant, agent).HasField("ticket")  # nothing to claim yet
    with stack.as_key(key) as client:
        r = client.post("/api/webhooks", json={"url": stack.receiver.url, "events": ["*"]})
        assert r.status_code == 201, r.text
        r = client.post("/api/projects", json={"name": "p", "tickets": [{"key": "a", "name": "A"}]})
        assert r.status_code == 201, r.text
        ticket_id = str(r.json()["tickets"][0]["id"])
        refused = client.post("/api/projects", json={"name": "q", "tickets": [{"key": "b", "name": "B"}]})
        assert refused.status_code == 429, refused.text
        for attempt in range(3):
            c = claim(stack.ticketing, tenant, agent)
            assert c.ticket.id == ticket_id
            fail(stack.ticketing, tenant, c, f"broken {attempt}")
        r = client.post("/api/dead-letters/redrive", json={"ticket_ids": [ticket_id]})
        assert r.status_code == 200, r.text
    c = claim(stack.ticketing, tenant, agent)
    assert c.ticket.id == ticket_id
    submit(stack.ticketing, tenant, c)
    for model in ("claude-sonnet-4-5-20250929", f"made-up-{uuid.uuid4().hex}"):
        stack.telemetry.RecordUsage(
            telpb.RecordUsageRequest(
                request_id=str(uuid.uuid4()),
                tenant_id=tenant,
                provider="anthropic",
                model=model,
                input_tokens=1000,
                output_tokens=200,
            )
        )
    spans = [_span(tenant, os.urandom(16)), _span(tenant, os.urandom(16)), _span(tenant, b"short")]
    export = otlp.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=spans)])]
    )
    reply = otlp_grpc.TraceServiceStub(stack.telemetry_channel).Export(export, timeout=30)  # type: ignore[no-untyped-call]
    assert reply.partial_success.rejected_spans == 1
    return ticket_id


def test_a_workload_shows_in_every_services_metrics(stack: Stack) -> None:
    before = scrape_all(stack)
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    _workload(stack, tenant)
    # Events delivered so far: ticket.created ... at least one per transition.
    stack.receiver.wait_for(3)

    e = "swarm_events_webhook_"

    def all_counted() -> dict[str, Scrape] | None:
        scrapes = scrape_all(stack)
        counted = scrapes["events"].value("swarm_events_webhook_deliveries_total") - before["events"].value(
            "swarm_events_webhook_deliveries_total"
        )
        events = scrapes["events"]
        # At rest (no attempt between its two series' updates): one latency
        # observation per attempt, whatever its outcome.
        at_rest = events.value(f"{e}delivery_duration_seconds_count") == events.value(f"{e}deliveries_total")
        return scrapes if counted >= len(stack.receiver.received) and at_rest else None

    after = eventually(all_counted, what="every delivery the receiver got counted")

    def delta(service: str, name: str, **labels: str) -> float:
        return after[service].value(name, **labels) - before[service].value(name, **labels)

    t = "swarm_ticketing_"
    assert delta("ticketing", f"{t}claims_total", outcome="claimed") == 4
    assert delta("ticketing", f"{t}claims_total", outcome="empty") == 1
    assert delta("ticketing", f"{t}quarantines_total", cause="failures") == 1
    assert delta("ticketing", f"{t}redrives_total") == 1
    assert after["ticketing"].families[f"{t}parked_pollers"] == "gauge"
    assert after["ticketing"].value(f"{t}parked_pollers") == 0  # nobody waits now
    assert after["ticketing"].families[f"{t}leases_expired"] == "counter"

    assert delta("quota", "swarm_quota_rejections_total", resource="tickets_per_day") == 1

    assert delta("events", f"{e}deliveries_total", outcome="succeeded") >= 3
    assert after["events"].families[f"{e}delivery_duration_seconds"] == "histogram"
    assert after["events"].value(f"{e}delivery_duration_seconds_bucket", le="+Inf") == after["events"].value(
        f"{e}delivery_duration_seconds_count"
    )

    tel = "swarm_telemetry_"
    assert delta("telemetry", f"{tel}spans_ingested_total") == 2
    assert delta("telemetry", f"{tel}spans_rejected_total") == 1
    sonnet = "claude-sonnet-4-5"  # the dated id counts as its alias
    assert delta("telemetry", f"{tel}llm_calls_total", model=sonnet) == 1
    assert delta("telemetry", f"{tel}llm_calls_total", model="unpriced") == 1
    assert delta("telemetry", f"{tel}llm_tokens_total", model=sonnet, kind="input") == 1000
    assert delta("telemetry", f"{tel}llm_tokens_total", model=sonnet, kind="output") == 200
    # Sonnet 4.5: $3 per million input tokens, $15 per million output.
    assert abs(delta("telemetry", f"{tel}llm_cost_usd_total", model=sonnet) - 0.006) < 1e-9
    assert delta("telemetry", f"{tel}llm_cost_usd_total", model="unpriced") == 0

    g = "swarm_gateway_http_"
    created = delta("gateway", f"{g}requests_total", method="POST", route="/api/projects", status_class="2xx")
    refused = delta("gateway", f"{g}requests_total", method="POST", route="/api/projects", status_class="4xx")
    assert created == 1 and refused == 1
    assert delta("gateway", f"{g}request_duration_seconds_count", method="POST", route="/api/projects") == 2

    for service, result in after.items():
        assert_bounded(result)
        # Each endpoint shows its own service's series and none of another's.
        ours = {n for n in result.names() if n.startswith("swarm_")}
        assert ours and all(n.startswith(PREFIXES[service]) for n in ours), (service, sorted(ours))
        assert tenant not in str(result.samples)
