"""Gateway behaviour: quotas and rate limits, error mapping, docs, tracing."""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh
from tests.support.waiting import eventually

pytestmark = BACKENDS


def _tickets(n: int) -> list[dict[str, str]]:
    return [{"key": str(i), "name": f"ticket {i}"} for i in range(n)]


def test_over_quota_project_is_429_and_writes_nothing(mesh: Mesh) -> None:
    t = f"free-{uuid.uuid4().hex[:6]}"
    key = mesh.tenant_with_key(t, plan="free")  # 10 tickets per day
    with mesh.as_key(key) as client:
        r = client.post("/api/projects", json={"name": "too big", "tickets": _tickets(11)})
        assert r.status_code == 429, r.text
        error = r.json()["error"]
        assert "limit reached" in error["message"] and "10" in error["message"]
        assert error["metadata"]["resource"] == "tickets_per_day"
        assert 0 < int(r.headers["Retry-After"]) <= 86400
        assert client.get("/api/projects").json()["items"] == []
        assert client.get("/api/tickets").json()["items"] == []

        assert client.post("/api/projects", json={"name": "fits", "tickets": _tickets(10)}).status_code == 201
        again = client.post("/api/projects", json={"name": "one more", "tickets": _tickets(1)})
        assert again.status_code == 429
        assert [p["name"] for p in client.get("/api/projects").json()["items"]] == ["fits"]
        usage = {u["resource"]: u for u in client.get("/api/quota/usage").json()["resources"]}
        assert usage["tickets_per_day"]["used"] == 10 and usage["tickets_per_day"]["limit"] == 10


def test_idempotency_key_creates_and_charges_once(mesh: Mesh) -> None:
    t = f"idem-{uuid.uuid4().hex[:6]}"
    key = mesh.tenant_with_key(t, plan="free")
    with mesh.as_key(key) as client:
        body = {"name": "once", "tickets": _tickets(6)}
        first = client.post("/api/projects", json=body, headers={"Idempotency-Key": "create-1"})
        again = client.post("/api/projects", json=body, headers={"Idempotency-Key": "create-1"})
        assert first.status_code == again.status_code == 201
        assert first.json()["project"]["id"] == again.json()["project"]["id"]
        usage = {u["resource"]: u for u in client.get("/api/quota/usage").json()["resources"]}
        assert usage["tickets_per_day"]["used"] == 6


def test_api_calls_are_rate_limited_per_hour_with_headers(mesh: Mesh) -> None:
    t = f"rl-{uuid.uuid4().hex[:6]}"
    key = mesh.tenant_with_key(t, api_calls_per_hour=3)
    with mesh.as_key(key) as client:
        remaining = []
        for _ in range(3):
            r = client.get("/api/projects")
            assert r.status_code == 200
            assert r.headers["X-RateLimit-Limit"] == "3"
            remaining.append(int(r.headers["X-RateLimit-Remaining"]))
            reset = int(r.headers["X-RateLimit-Reset"])
            assert time.time() < reset <= time.time() + 3600
        assert remaining == [2, 1, 0]
        r = client.get("/api/projects")
        assert r.status_code == 429
        assert r.headers["X-RateLimit-Remaining"] == "0"
        assert 0 < int(r.headers["Retry-After"]) <= 3600
        assert r.json()["error"]["metadata"]["resource"] == "api_calls_per_hour"


def test_backend_errors_map_to_http_codes_naming_the_problem(mesh: Mesh) -> None:
    key = mesh.tenant_with_key(f"err-{uuid.uuid4().hex[:6]}")
    with mesh.as_key(key) as client:
        cycle = client.post(
            "/api/projects",
            json={
                "name": "c",
                "tickets": [
                    {"key": "a", "name": "A", "depends_on": ["b"]},
                    {"key": "b", "name": "B", "depends_on": ["a"]},
                ],
            },
        )
        assert cycle.status_code == 400
        assert "dependency cycle" in cycle.json()["error"]["message"]
        assert cycle.json()["error"]["field"] == "tickets"

        missing = client.get(f"/api/tickets/{uuid.uuid4()}")
        assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"

        created = client.post("/api/projects", json={"name": "p", "tickets": _tickets(1)}).json()
        ready = created["tickets"][0]["id"]
        conflict = client.post("/api/dead-letters/redrive", json={"ticket_ids": [ready]})
        assert conflict.status_code == 409 and "not quarantined" in conflict.json()["error"]["message"]

        invalid = client.post("/api/projects", json={"name": "", "tickets": []})
        assert invalid.status_code == 422
        fields = {tuple(d["loc"]) for d in invalid.json()["detail"]}
        assert ("body", "name") in fields and ("body", "tickets") in fields

        surrogate = client.post(
            "/api/projects",
            content=b'{"name": "\\ud800", "tickets": [{"key": "a", "name": "A"}]}',
            headers={"Content-Type": "application/json"},
        )
        assert surrogate.status_code == 422

        bad_token = client.get("/api/tickets", params={"page_token": "not-a-token"})
        assert bad_token.status_code == 400 and bad_token.json()["error"]["field"] == "page_token"


def test_openapi_and_docs_are_served(mesh: Mesh) -> None:
    spec = mesh.http.get("/openapi.json").json()
    assert "/api/projects" in spec["paths"] and "/admin/tenants" in spec["paths"]
    assert mesh.http.get("/docs").status_code == 200


def test_http_trace_context_continues_through_grpc_hops(spans: InMemorySpanExporter, mesh: Mesh) -> None:
    key = mesh.tenant_with_key(f"tr-{uuid.uuid4().hex[:6]}")
    trace_id = uuid.uuid4().hex
    parent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    with mesh.as_key(key) as client:
        assert client.get("/api/projects", headers={"traceparent": parent}).status_code == 200
    name = "/swarm.ticketing.v1.TicketingService/ListProjects"

    def finished() -> list[ReadableSpan]:
        # Spans end (and are exported) just after the response goes out, so
        # the client can be ahead of both the gRPC and the HTTP server span.
        mine = [s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
        kinds = {(s.name, s.kind) for s in mine}
        http_done = any(k == SpanKind.SERVER and "GET /api/projects" in n for n, k in kinds)
        return mine if (name, SpanKind.SERVER) in kinds and http_done else []

    mine = eventually(finished, timeout=10, what="the request's spans")
    by_id = {s.context.span_id: s for s in mine}
    grpc_server = next(s for s in mine if s.name == name and s.kind == SpanKind.SERVER)
    grpc_client = by_id[grpc_server.parent.span_id]  # type: ignore[union-attr]
    assert grpc_client.kind == SpanKind.CLIENT
    # Up the chain from the gRPC client span we reach the gateway's HTTP server span,
    # whose parent is the caller's traceparent.
    node = grpc_client
    while node.parent is not None and node.parent.span_id in by_id:
        node = by_id[node.parent.span_id]
    assert node.kind == SpanKind.SERVER and "GET /api/projects" in node.name
    assert node.parent is not None and format(node.parent.span_id, "016x") == parent.split("-")[2]


def test_health_endpoints_report_backends(mesh: Mesh) -> None:
    assert mesh.http.get("/healthz").json() == {"status": "ok"}
    ready = mesh.http.get("/readyz")
    assert ready.status_code == 200
    backends = ready.json()["backends"]
    assert ready.json()["ready"] is True
    assert backends["ticketing"] == backends["quota"] == backends["events"] == "SERVING"
    # Not running in this mesh: reported, but the gateway is still ready.
    assert backends["vmhost"] == "UNAVAILABLE"


def test_out_of_range_numbers_are_422_not_a_crash(mesh: Mesh) -> None:
    # Found by schemathesis: an override beyond int64 used to overflow the protobuf field.
    huge = mesh.admin("POST", "/admin/tenants", json={"overrides": {"vms": -(10**25)}})
    assert huge.status_code == 422
    assert huge.json()["detail"][0]["loc"][:2] == ["body", "overrides"]
    priority = mesh.admin("POST", "/admin/tenants", json={"overrides": {"vms": 10**16}})
    assert priority.status_code == 422


def test_api_calls_leave_no_idempotency_rows_behind(mesh: Mesh) -> None:
    from swarm_quota.tables import quota_requests

    def rows() -> int:
        with mesh.quota_db.engine.connect() as conn:
            count: int = conn.execute(sa.select(sa.func.count()).select_from(quota_requests)).scalar_one()
        return count

    # Creating the tenant and its key may keep rows (their request ids); API calls must not.
    key = mesh.tenant_with_key(f"rows-{uuid.uuid4().hex[:6]}")
    before = rows()
    with mesh.as_key(key) as client:
        for _ in range(5):
            assert client.get("/api/projects").status_code == 200
    assert rows() == before
