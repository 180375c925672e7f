"""Operators over REST: cancelling a ticket (409 naming its dependents unless
cascaded) and a whole project, the agent's lease gone at once; a project's
progress and its tickets' estimates."""

from __future__ import annotations

import uuid

from swarm.ticketing.v1 import ticketing_pb2 as tpb
from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh

pytestmark = BACKENDS


def test_cancel_a_ticket_then_the_project(mesh: Mesh) -> None:
    t = f"cancel-{uuid.uuid4().hex[:6]}"
    key = mesh.tenant_with_key(t)
    with mesh.as_key(key) as client:
        made = client.post(
            "/api/projects",
            json={
                "name": "p",
                "tickets": [
                    {"key": "a", "name": "A"},
                    {"key": "b", "name": "B", "depends_on": ["a"]},
                    {"key": "c", "name": "C"},
                ],
            },
        ).json()
        a, b, c = (x["id"] for x in made["tickets"])
        held = mesh.ticketing.ClaimTicket(tpb.ClaimTicketRequest(tenant_id=t, agent_id="agent-1"))
        refused = client.post(f"/api/tickets/{a}/cancel", json={"reason": "spec was wrong"})
        assert refused.status_code == 409, refused.text
        assert "1 unfinished tickets depend on ticket" in refused.json()["error"]["message"]
        r = client.post(f"/api/tickets/{a}/cancel", json={"reason": "spec was wrong", "cascade": True})
        assert r.status_code == 200, r.text
        assert [(x["id"], x["state"]) for x in r.json()["tickets"]] == [(a, "cancelled"), (b, "cancelled")]
        if held.ticket.id == a:
            renewed = client.get(f"/api/tickets/{a}").json()
            assert renewed["lease"] is None
        events = client.get(f"/api/tickets/{a}/events").json()["items"]
        assert events[-1]["event_type"] == "cancelled" and events[-1]["actor_id"].startswith("api-key:")
        assert client.post(f"/api/tickets/{a}/cancel", json={}).status_code == 409
        whole = client.post(f"/api/projects/{made['project']['id']}/cancel", json={"reason": "dropped"})
        assert whole.status_code == 200 and [x["id"] for x in whole.json()["tickets"]] == [c]
        assert {x["state"] for x in client.get("/api/tickets").json()["items"]} == {"cancelled"}
        listed = client.get("/api/tickets", params={"state": "cancelled"}).json()["items"]
        assert len(listed) == 3


def test_project_progress_and_ticket_estimates(mesh: Mesh) -> None:
    t = f"eta-{uuid.uuid4().hex[:6]}"
    with mesh.as_key(mesh.tenant_with_key(t)) as client:
        made = client.post(
            "/api/projects",
            json={
                "name": "p",
                "tickets": [{"key": "a", "name": "A"}, {"key": "b", "name": "B", "depends_on": ["a"]}],
            },
        ).json()
        assert made["tickets"][0]["estimate"] == {
            "complexity_score": 4,
            "optimistic_minutes": 13,
            "expected_minutes": 25,
            "pessimistic_minutes": 50,
            "confidence": "low",
        }
        assert made["tickets"][0]["actual_minutes"] is None
        progress = client.get(f"/api/projects/{made['project']['id']}/progress")
        assert progress.status_code == 200, progress.text
        body = progress.json()
        assert (body["queued"], body["percent_complete"], body["critical_path_minutes"]) == (2, 0.0, 50.0)
        assert body["eta_minutes"] == 50.0 and body["eta"]
