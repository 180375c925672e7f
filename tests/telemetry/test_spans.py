"""Spans in through stock OTLP, out as the ticket's trace tree."""

from __future__ import annotations

import uuid

import grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from swarm.telemetry.v1 import telemetry_pb2 as pb
from swarmcommon.waterfall import render_waterfall
from tests.support.harness import BACKENDS, TelemetryHarness
from tests.support.status import raises_status
from tests.telemetry.helpers import work_on_ticket

pytestmark = BACKENDS


def test_stock_otlp_export_reads_back_as_the_ticket_tree(telemetry: TelemetryHarness) -> None:
    ticket = str(uuid.uuid4())
    trace_id = work_on_ticket(telemetry, "acme", ticket)
    reply = telemetry.stub.GetTicketTrace(pb.GetTicketTraceRequest(tenant_id="acme", ticket_id=ticket))
    assert list(reply.trace_ids) == [trace_id]
    names = [(s.name, s.depth) for s in reply.spans]
    assert names == [
        ("agent.work", 0),
        ("vm.restore", 1),
        ("git.clone", 1),
        ("llm.generate_code", 1),
        ("file.write", 1),
        ("git.commit", 1),
        ("git.push", 1),
    ]
    root = reply.spans[0]
    assert root.parent_span_id == "" and root.tenant_id == "acme" and root.ticket_id == ticket
    assert all(s.parent_span_id == root.span_id for s in reply.spans[1:])  # parent links intact
    assert root.agent_id == "coder-1" and root.service_name == "swarm-agent"  # from the resource
    llm = next(s for s in reply.spans if s.name == "llm.generate_code")
    assert [e.name for e in llm.events] == ["prompt_sent", "response_received"]
    assert llm.events[0].attributes["tokens"] == 2500
    total = reply.total_duration.ToNanoseconds()
    assert root.share_of_total == 1.0
    assert abs(llm.share_of_total - llm.duration.ToNanoseconds() / total) < 1e-9
    assert max(reply.spans[1:], key=lambda s: s.share_of_total).name == "llm.generate_code"
    assert reply.total_duration.ToNanoseconds() == root.duration.ToNanoseconds()

    text = render_waterfall(reply)
    assert "llm.generate_code" in text and "% of time" in text and "prompt_sent" in text


def test_trace_reads_are_tenant_scoped(telemetry: TelemetryHarness) -> None:
    ticket = str(uuid.uuid4())
    work_on_ticket(telemetry, "acme", ticket)
    with raises_status(grpc.StatusCode.NOT_FOUND, ticket):
        telemetry.stub.GetTicketTrace(pb.GetTicketTraceRequest(tenant_id="other", ticket_id=ticket))
    assert list(telemetry.stub.ListSpans(pb.ListSpansRequest(tenant_id="other")).spans) == []
    assert len(telemetry.stub.ListSpans(pb.ListSpansRequest(tenant_id="acme")).spans) == 7


def test_a_shared_trace_shows_each_ticket_only_its_own_branch(telemetry: TelemetryHarness) -> None:
    """Tickets of one project share the trace of the request that created them
    (and an agent process may put its tenant on every span's resource)."""
    provider = telemetry.provider(**{"swarm.tenant_id": "acme"})
    tracer = provider.get_tracer("test")
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    with tracer.start_as_current_span("POST /api/projects"):
        for ticket in (a, b):
            with tracer.start_as_current_span(
                "agent.work", attributes={"swarm.tenant_id": "acme", "swarm.ticket_id": ticket}
            ):
                with tracer.start_as_current_span(f"work-{ticket[:4]}"):
                    with tracer.start_as_current_span(f"deeper-{ticket[:4]}"):
                        pass
    provider.shutdown()
    reply = telemetry.stub.GetTicketTrace(pb.GetTicketTraceRequest(tenant_id="acme", ticket_id=a))
    assert [s.name for s in reply.spans] == [
        "POST /api/projects",
        "agent.work",
        f"work-{a[:4]}",
        f"deeper-{a[:4]}",
    ]
    assert [s.depth for s in reply.spans] == [0, 1, 2, 3]
    # The deeper spans were indexed under their ticket too.
    listed = telemetry.stub.ListSpans(pb.ListSpansRequest(tenant_id="acme", ticket_id=b)).spans
    assert sorted(s.name for s in listed) == sorted(["agent.work", f"work-{b[:4]}", f"deeper-{b[:4]}"])


def test_list_spans_filters_and_pages(telemetry: TelemetryHarness) -> None:
    ticket = str(uuid.uuid4())
    trace_id = work_on_ticket(telemetry, "acme", ticket)
    slow = telemetry.stub.ListSpans(
        pb.ListSpansRequest(tenant_id="acme", min_duration={"nanos": 20_000_000}, trace_id=trace_id)
    ).spans
    assert {s.name for s in slow} == {"agent.work", "llm.generate_code"}
    named = telemetry.stub.ListSpans(pb.ListSpansRequest(tenant_id="acme", name="git.push")).spans
    assert [s.name for s in named] == ["git.push"]
    seen, token = [], ""
    while True:
        page = telemetry.stub.ListSpans(pb.ListSpansRequest(tenant_id="acme", page_size=3, page_token=token))
        seen += [s.span_id for s in page.spans]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 7
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "trace_id"):
        telemetry.stub.ListSpans(pb.ListSpansRequest(tenant_id="acme", trace_id="xyz"))


def test_own_tracing_does_not_feed_back(telemetry: TelemetryHarness, spans: InMemorySpanExporter) -> None:
    """The OTLP intake is not traced: an export makes no span of its own."""
    spans.clear()  # the session's exporter holds every earlier test's spans
    ticket = str(uuid.uuid4())
    work_on_ticket(telemetry, "acme", ticket)
    telemetry.stub.ListSpans(pb.ListSpansRequest(tenant_id="acme"))
    names = {s.name for s in spans.get_finished_spans()}
    assert any("TelemetryService/ListSpans" in n for n in names)  # the service itself is traced
    assert not any("TraceService/Export" in n for n in names), sorted(names)
