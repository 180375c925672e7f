"""Ticket traces and LLM usage through the REST gateway, tenant-scoped."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from swarm.telemetry.v1 import telemetry_pb2 as tpb
from swarm.telemetry.v1 import telemetry_pb2_grpc as tpb_grpc
from swarmcommon.grpcclient import channel
from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh, routes_tagged

pytestmark = BACKENDS


def _agent_spans(mesh: Mesh, tenant: str, ticket: str) -> None:
    """An agent's spans for one ticket, through the stock OTLP exporter."""
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
    ch.close()


def _setup(mesh: Mesh) -> tuple[str, httpx.Client, str, str]:
    tenant = f"a-{uuid.uuid4().hex[:6]}"
    key = mesh.tenant_with_key(tenant)
    with mesh.as_key(key) as setup:
        project_spec = {"name": "p", "tickets": [{"key": "a", "name": "A"}]}
        created = setup.post("/api/projects", json=project_spec).json()
    project, ticket = created["project"]["id"], created["tickets"][0]["id"]
    _agent_spans(mesh, tenant, ticket)
    _usage(mesh, tenant, project, ticket, "claude-sonnet-4-6", 10_000)
    _usage(mesh, tenant, project, ticket, "claude-haiku-4-5", 10_000)
    return tenant, mesh.as_key(key), project, ticket


def test_ticket_trace_as_json_and_as_the_waterfall(mesh: Mesh) -> None:
    _, client, _, ticket = _setup(mesh)
    with client:
        r = client.get(f"/api/tickets/{ticket}/trace")
        assert r.status_code == 200, r.text
        body = r.json()
        assert [(s["name"], s["depth"]) for s in body["spans"]] == [
            ("agent.work", 0),
            ("git.clone", 1),
            ("llm.generate_code", 1),
        ]
        assert body["spans"][1]["parent_span_id"] == body["spans"][0]["span_id"]
        assert body["spans"][2]["events"][0]["name"] == "prompt_sent"
        assert body["spans"][0]["agent_id"] == "c-1" and len(body["trace_ids"]) == 1
        text = client.get(f"/api/tickets/{ticket}/trace", params={"format": "text"})
        assert text.headers["content-type"].startswith("text/plain")
        assert (
            "├─ git.clone" in text.text and "└─ llm.generate_code" in text.text and "prompt_sent" in text.text
        )
        assert client.get(f"/api/tickets/{ticket}/trace", params={"format": "xml"}).status_code == 422


def test_usage_summary_groups_and_validates(mesh: Mesh) -> None:
    _, client, project, ticket = _setup(mesh)
    with client:
        by_model = client.get("/api/usage", params={"group_by": "model"}).json()
        assert [r["key"] for r in by_model["rows"]] == ["claude-sonnet-4-6", "claude-haiku-4-5"]  # by cost
        sonnet = by_model["rows"][0]["totals"]
        assert sonnet["cost_usd_micros"] == 10_000 * 3 + 1_000 * 15 and sonnet["cost_usd"] == 0.045
        assert by_model["total"]["request_count"] == 2
        by_project = client.get("/api/usage", params={"group_by": "project"}).json()
        assert [r["key"] for r in by_project["rows"]] == [project] and by_project["rows"][0][
            "share_of_cost"
        ] == 1.0
        filtered = client.get("/api/usage", params={"group_by": "ticket", "project_id": project}).json()
        assert [r["key"] for r in filtered["rows"]] == [ticket]
        for params in ({"group_by": "planet"}, {"since": "0.5"}, {"project_id": "x"}, {"page_size": -1}):
            r = client.get("/api/usage", params=params)
            assert r.status_code == 422, (params, r.text)
        r = client.get(
            "/api/usage", params={"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}
        )
        assert r.status_code == 400 and "end_time" in r.text


def test_every_telemetry_route_hides_other_tenants_data(mesh: Mesh) -> None:
    _, owner, _, ticket = _setup(mesh)
    owner.close()
    exercised: set[tuple[str, str]] = set()
    with mesh.as_key(mesh.tenant_with_key(f"b-{uuid.uuid4().hex[:6]}")) as other:

        def call(route: str, path: str, **kw: Any) -> None:
            exercised.add(("GET", route))
            r = other.get(path, **kw)
            assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND", r.text

        call("/api/tickets/{ticket_id}/trace", f"/api/tickets/{ticket}/trace")
        call("/api/tickets/{ticket_id}/trace", f"/api/tickets/{ticket}/trace", params={"format": "text"})
        exercised.add(("GET", "/api/usage"))
        for group in ("project", "ticket", "agent_type", "model", "day", "month"):
            listed = other.get("/api/usage", params={"group_by": group}).json()
            assert listed["rows"] == [] and listed["total"]["request_count"] == 0
    assert routes_tagged(mesh, {"telemetry"}) - exercised == set(), "routes not covered by the isolation walk"
