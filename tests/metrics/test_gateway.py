"""The gateway's own GET /metrics: unauthenticated, out of the API docs,
counting requests by route template and status class — a refused request
too, and never the path a caller sent."""

from __future__ import annotations

import uuid

import httpx

from tests.metrics.scrape import assert_bounded, scrape
from tests.metrics.stack import Stack

REQUESTS = "swarm_gateway_http_requests_total"


def test_metrics_need_no_key_and_are_not_in_the_api_docs(stack: Stack) -> None:
    r = httpx.get(f"{stack.base_url}/metrics", timeout=10)
    assert r.status_code == 200 and "# TYPE swarm_gateway_http_requests_total counter" in r.text
    assert "process_cpu_seconds_total" in r.text  # the process's own series too
    paths = stack.http.get("/openapi.json").json()["paths"]
    assert "/metrics" not in paths


def test_requests_count_by_route_template_never_by_path(stack: Stack) -> None:
    url = f"{stack.base_url}/metrics"
    template = "/api/tickets/{ticket_id}"
    before = scrape(url)
    ticket = str(uuid.uuid4())
    # Refused by the guard (no key) before routing: still the route's template.
    assert stack.http.get(f"/api/tickets/{ticket}").status_code == 401
    key = stack.tenant_with_key(f"gw-{uuid.uuid4().hex[:6]}")
    with stack.as_key(key) as client:
        assert client.get(f"/api/tickets/{ticket}").status_code == 404
        assert client.get(f"/api/nothing-here/{ticket}").status_code == 404
        assert client.get("/api/projects").status_code == 200
    after = scrape(url)

    def delta(**labels: str) -> float:
        return after.value(REQUESTS, **labels) - before.value(REQUESTS, **labels)

    assert delta(method="GET", route=template, status_class="4xx") == 2
    assert delta(method="GET", route="/api/projects", status_class="2xx") == 1
    assert delta(method="GET", route="unmatched", status_class="4xx") == 1
    assert not any(ticket in s.labels.get("route", "") for s in after.samples)
    assert_bounded(after)
