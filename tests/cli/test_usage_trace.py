"""`swarm usage` and `swarm trace` over spans and LLM usage that telemetry
really received (the stock OTLP exporter, RecordUsage)."""

from __future__ import annotations

import uuid
from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from swarm.telemetry.v1 import telemetry_pb2 as tpb
from swarm.telemetry.v1 import telemetry_pb2_grpc as tpb_grpc
from swarmcommon.grpcclient import channel
from tests.cli.runner import Swarm
from tests.support.mesh import Mesh
from tests.support.waiting import eventually


def _agent_spans(mesh: Mesh, tenant: str, ticket: str) -> None:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "swarm-agent", "swarm.agent_id": "c-1"})
    )
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{mesh.telemetry.port}", insecure=True)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span(
        "agent.work", attributes={"swarm.tenant_id": tenant, "swarm.ticket_id": ticket}
    ):
        with tracer.start_as_current_span("git.clone"):
            pass
        with tracer.start_as_current_span("llm.generate_code") as llm:
            llm.add_event("prompt_sent", {"tokens": 2500})
    provider.shutdown()


def _usage(mesh: Mesh, tenant: str, project: str, ticket: str, model: str, tokens: int) -> None:
    ch = channel(f"127.0.0.1:{mesh.telemetry.port}")
    try:
        tpb_grpc.TelemetryServiceStub(ch).RecordUsage(
            tpb.RecordUsageRequest(
                request_id=str(uuid.uuid4()),
                tenant_id=tenant,
                project_id=project,
                ticket_id=ticket,
                request_type="coder",
                provider="anthropic",
                model=model,
                input_tokens=tokens,
                output_tokens=tokens // 10,
            )
        )
    finally:
        ch.close()


def _project(swarm: Swarm, tmp_path: Path) -> tuple[str, str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: costly\ntickets:\n  - {key: a, name: A}\n")
    created = swarm.json("project", "create", "-f", str(spec))
    return created["project"]["id"], created["tickets"][0]["id"]


def test_trace_prints_the_waterfall(swarm: Swarm, mesh: Mesh, tmp_path: Path) -> None:
    _, ticket = _project(swarm, tmp_path)
    _agent_spans(mesh, swarm.tenant, ticket)
    text = eventually(
        lambda: (r := swarm.run("trace", ticket)).exit_code == 0 and "git.clone" in r.stdout and r.stdout,
        what="the trace",
    )
    # The gateway renders the waterfall (swarmcommon.waterfall); the CLI prints it as it is.
    with mesh.as_key(swarm.api_key) as api:
        rendered = api.get(f"/api/tickets/{ticket}/trace", params={"format": "text"}).text
    assert text == rendered.rstrip("\n") + "\n"
    assert f"Ticket {ticket}" in text
    assert text.index("agent.work") < text.index("git.clone") < text.index("llm.generate_code")
    assert "prompt_sent" in text
    spans = swarm.json("trace", ticket)["spans"]
    assert {"agent.work", "git.clone", "llm.generate_code"} <= {s["name"] for s in spans}


def test_trace_of_a_ticket_without_spans_is_the_gateways_404(swarm: Swarm) -> None:
    result = swarm("trace", str(uuid.uuid4()), code=1)
    assert result.stderr.startswith("error: 404 NOT_FOUND:")


def test_usage_shows_quota_bars_and_cost_by_project_agent_type_and_model(
    swarm: Swarm, mesh: Mesh, tmp_path: Path
) -> None:
    project, ticket = _project(swarm, tmp_path)
    _usage(mesh, swarm.tenant, project, ticket, "claude-sonnet-4-6", 100_000)
    _usage(mesh, swarm.tenant, project, ticket, "claude-haiku-4-5", 10_000)

    body = swarm.json("usage")
    quota = {r["resource"]: r for r in body["quota"]["resources"]}
    assert quota["tickets_per_day"]["used"] == 1
    assert {r["key"] for r in body["cost"]["model"]["rows"]} == {"claude-sonnet-4-6", "claude-haiku-4-5"}
    assert [r["key"] for r in body["cost"]["project"]["rows"]] == [project]
    assert [r["key"] for r in body["cost"]["agent_type"]["rows"]] == ["coder"]

    out = swarm("usage").stdout
    limit = quota["tickets_per_day"]["limit"]
    bar_line = next(line for line in out.splitlines() if "tickets_per_day" in line)
    assert "│ 1 " in bar_line and f"│ {limit} " in bar_line and "░" in bar_line
    assert "LLM cost by project" in out and project in out
    assert "LLM cost by agent type" in out and "coder" in out
    assert "claude-sonnet-4-6" in out and "claude-haiku-4-5" in out
    total = body["cost"]["model"]["total"]["cost_usd_micros"]
    assert total > 0 and f"${total / 1_000_000:,.4f}" in out
