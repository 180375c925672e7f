"""Tenant isolation through the REST gateway: every route, another tenant's key."""

from __future__ import annotations

import json
import uuid

from swarm.ticketing.v1 import ticketing_pb2 as tpb
from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh, api_routes, routes_tagged

pytestmark = BACKENDS

# Route tags whose isolation walk lives in another module; each of those
# modules asserts that it covers every route carrying its tag.
WALKED_ELSEWHERE = {
    "webhooks": "tests/gateway/test_webhook_routes.py",
    "events": "tests/gateway/test_webhook_routes.py",
    "telemetry": "tests/gateway/test_telemetry_routes.py",
    "agents": "tests/gateway/test_agent_routes.py",
    "marketplace": "tests/gateway/test_marketplace_routes.py",
}


def _quarantine_one(mesh: Mesh, tenant_id: str) -> str:
    """Drive one of the tenant's tickets into the dead-letter queue as agents would."""
    ticket_id = ""
    for i in range(3):
        c = mesh.ticketing.ClaimTicket(tpb.ClaimTicketRequest(tenant_id=tenant_id, agent_id=f"agent-{i}"))
        ticket_id = c.ticket.id
        mesh.ticketing.ReportFailure(
            tpb.ReportFailureRequest(
                tenant_id=tenant_id, ticket_id=c.ticket.id, claim_token=c.lease.claim_token, reason="poison"
            )
        )
    return ticket_id


def test_every_tenant_route_hides_other_tenants_objects(mesh: Mesh) -> None:
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    key_a, key_b = mesh.tenant_with_key(a), mesh.tenant_with_key(b)
    with mesh.as_key(key_a) as as_a, mesh.as_key(key_b) as as_b:
        created = as_a.post(
            "/api/projects",
            json={
                "name": "secret",
                "tickets": [
                    {"key": "x", "name": "X"},
                    {"key": "y", "name": "Y", "stages": ["coder", "reviewer"]},
                ],
            },
        )
        assert created.status_code == 201, created.text
        project_id = created.json()["project"]["id"]
        ticket_ids = [t["id"] for t in created.json()["tickets"]]
        dead = _quarantine_one(mesh, a)
        mr_ticket = mesh.ticketing.ClaimTicket(tpb.ClaimTicketRequest(tenant_id=a, agent_id="coder"))
        mesh.ticketing.SubmitWork(
            tpb.SubmitWorkRequest(
                tenant_id=a,
                ticket_id=mr_ticket.ticket.id,
                claim_token=mr_ticket.lease.claim_token,
                result_json=json.dumps({"branch": "swarm/secret", "commit": "c0ffee" + "0" * 34}),
            )
        )

        exercised: set[tuple[str, str]] = set()

        def call(method: str, route: str, path: str, **kw: object) -> None:
            exercised.add((method, route))
            r = as_b.request(method, path, **kw)  # type: ignore[arg-type]
            assert r.status_code == 404, f"{method} {path}: {r.status_code} {r.text}"
            assert r.json()["error"]["status"] == "NOT_FOUND"

        def listing(route: str, path: str, **params: str) -> None:
            exercised.add(("GET", route))
            r = as_b.get(path, params=params)
            assert r.status_code == 200, r.text
            body = r.text
            for secret in [project_id, *ticket_ids, "secret", "c0ffee"]:
                assert secret not in body, f"GET {path} leaked {secret}"

        call("GET", "/api/projects/{project_id}", f"/api/projects/{project_id}")
        call("GET", "/api/projects/{project_id}/progress", f"/api/projects/{project_id}/progress")
        call("GET", "/api/tickets/{ticket_id}", f"/api/tickets/{ticket_ids[0]}")
        call("GET", "/api/tickets/{ticket_id}/events", f"/api/tickets/{ticket_ids[0]}/events")
        call("POST", "/api/dead-letters/redrive", "/api/dead-letters/redrive", json={"ticket_ids": [dead]})
        # B cannot edit or stop A's work.
        call("PATCH", "/api/tickets/{ticket_id}", f"/api/tickets/{ticket_ids[0]}", json={"priority": 5})
        cap = f"/api/tickets/{ticket_ids[0]}/cost-cap"
        call("PUT", "/api/tickets/{ticket_id}/cost-cap", cap, json={"cost_cap_usd_micros": 1_000_000})
        call("POST", "/api/tickets/{ticket_id}/cancel", f"/api/tickets/{ticket_ids[0]}/cancel", json={})
        call("POST", "/api/projects/{project_id}/cancel", f"/api/projects/{project_id}/cancel", json={})
        # Nor see, snapshot or roll back A's project (404 before its missing repository is 409).
        snaps, fake = f"/api/projects/{project_id}/snapshots", "00000000-0000-4000-8000-000000000000"
        call("GET", "/api/projects/{project_id}/snapshots", snaps)
        call("POST", "/api/projects/{project_id}/snapshots", snaps, json={})
        call("GET", "/api/projects/{project_id}/snapshots/{snapshot_id}/plan", f"{snaps}/{fake}/plan")
        call(
            "POST",
            "/api/projects/{project_id}/rollback",
            f"/api/projects/{project_id}/rollback",
            json={"snapshot_id": fake, "expected_head": "0" * 40},
        )
        call("GET", "/api/projects/{project_id}/rollbacks", f"/api/projects/{project_id}/rollbacks")
        call("GET", "/api/projects/{project_id}/audit", f"/api/projects/{project_id}/audit")
        # Nor read or curate A's conventions and learnings (seed §13).
        conv = as_a.post(f"/api/projects/{project_id}/conventions", json={"content": "secret convention"})
        assert conv.status_code == 201, conv.text
        as_a.post("/api/conventions", json={"content": "secret tenant convention"})
        convs = f"/api/projects/{project_id}/conventions"
        call("GET", "/api/projects/{project_id}/conventions", convs)
        call("POST", "/api/projects/{project_id}/conventions", convs, json={"content": "x"})
        call("DELETE", "/api/conventions/{convention_id}", f"/api/conventions/{conv.json()['id']}")
        call("GET", "/api/projects/{project_id}/learnings", f"/api/projects/{project_id}/learnings")
        learned = as_a.get(f"/api/projects/{project_id}/learnings").json()["items"]
        call(
            "DELETE",
            "/api/learnings/{learning_id}",
            f"/api/learnings/{learned[0]['id'] if learned else fake}",
        )
        listing("/api/conventions", "/api/conventions")
        exercised.add(("POST", "/api/conventions"))
        assert as_b.post("/api/conventions", json={"content": "b's own"}).status_code == 201
        assert [c["content"] for c in as_a.get(convs).json()["items"]] == ["secret convention"]
        mrs = as_a.get("/api/merge-requests").json()["items"]
        assert [m["branch"] for m in mrs] == ["swarm/secret"]
        call("GET", "/api/merge-requests/{merge_request_id}", f"/api/merge-requests/{mrs[0]['id']}")
        listing("/api/merge-requests", "/api/merge-requests")
        listing("/api/merge-requests", "/api/merge-requests", project_id=project_id)
        listing("/api/projects", "/api/projects")
        listing("/api/tickets", "/api/tickets")
        listing("/api/tickets", "/api/tickets", project_id=project_id)
        listing("/api/dead-letters", "/api/dead-letters")
        listing("/api/dead-letters", "/api/dead-letters", project_id=project_id)
        listing("/api/quota/usage", "/api/quota/usage")
        # A's own agent template and its canary deployment.
        slug = f"{a}-coder"
        made = as_a.post("/api/templates", json={"slug": slug, "agent_type": "coder", "name": "A's coder"})
        assert made.status_code == 201, made.text
        for n in (1, 2):
            version = as_a.post(f"/api/templates/{slug}/versions", json={"prompt": f"secret prompt v{n}"})
            assert version.status_code == 201, version.text
        as_a.post("/api/deployments", json={"slug": slug, "version": 1, "rollout_percent": 100})
        canary = as_a.post("/api/deployments", json={"slug": slug, "version": 2, "rollout_percent": 5}).json()
        call("GET", "/api/templates/{slug}", f"/api/templates/{slug}")
        call(
            "POST", "/api/templates/{slug}/versions", f"/api/templates/{slug}/versions", json={"prompt": "x"}
        )
        call(
            "POST",
            "/api/deployments",
            "/api/deployments",
            json={"slug": slug, "version": 1, "rollout_percent": 5},
        )
        for action in ("", "/promote", "/rollback", "/pause"):
            method = "GET" if not action else "POST"
            kw = {} if not action else {"json": {}}
            call(
                method,
                f"/api/deployments/{{deployment_id}}{action}",
                f"/api/deployments/{canary['id']}{action}",
                **kw,
            )
        exercised.add(("POST", "/api/templates"))
        theirs = as_b.post(
            "/api/templates", json={"slug": f"{b}-coder", "agent_type": "coder", "name": "B's"}
        )
        assert theirs.status_code == 201, theirs.text
        assert as_a.get(f"/api/deployments/{canary['id']}").json()["status"] == "canary"
        # B creating its own project touches nothing of A's.
        exercised.add(("POST", "/api/projects"))
        mine = as_b.post("/api/projects", json={"name": "b's", "tickets": [{"key": "k", "name": "K"}]})
        assert mine.status_code == 201
        assert mine.json()["project"]["id"] != project_id

        # A still sees everything of its own.
        assert as_a.get(f"/api/projects/{project_id}").status_code == 200
        assert [t["id"] for t in as_a.get("/api/dead-letters").json()["items"]] == [dead]
        untouched = as_a.get(f"/api/tickets/{ticket_ids[0]}").json()
        assert untouched["priority"] != 5 and untouched.get("cost_cap_usd_micros") is None, untouched

        # Tenant keys do not open the admin surface.
        for route in [r for r in api_routes(mesh.app) if r.path.startswith("/admin")]:
            for method in route.methods:
                path = route.path.replace("{tenant_id}", a).replace("{key_id}", "k")
                exercised.add((method, route.path))
                assert as_b.request(method, path, json={}).status_code == 401, (method, path)

    every = {(m, r.path) for r in api_routes(mesh.app) if r.include_in_schema for m in r.methods}
    every -= routes_tagged(mesh, set(WALKED_ELSEWHERE))
    assert every - exercised == set(), "routes not covered by the isolation walk"


def test_missing_unknown_and_revoked_keys_are_401(mesh: Mesh) -> None:
    t = f"t-{uuid.uuid4().hex[:6]}"
    key = mesh.tenant_with_key(t)
    assert mesh.http.get("/api/projects").status_code == 401
    assert mesh.http.get("/api/projects", headers={"Authorization": "Basic abc"}).status_code == 401
    assert mesh.http.get("/api/projects", headers={"Authorization": "Bearer nope"}).status_code == 401
    with mesh.as_key(key) as client:
        assert client.get("/api/projects").status_code == 200
        key_id = mesh.admin("GET", f"/admin/tenants/{t}/api-keys").json()["items"][0]["id"]
        assert mesh.admin("DELETE", f"/admin/tenants/{t}/api-keys/{key_id}").status_code == 200
        r = client.get("/api/projects")
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert r.json()["error"]["status"] == "UNAUTHENTICATED"
