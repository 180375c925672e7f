"""Conventions and learnings over REST (both backends): a tenant adds, lists
and deletes its conventions; a failure becomes a learning listed under its
project and deletable; bad bodies are 4xx and write nothing."""

from __future__ import annotations

import uuid

from swarm.ticketing.v1 import ticketing_pb2 as tpb
from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh

pytestmark = BACKENDS


def test_conventions_and_learnings(mesh: Mesh) -> None:
    t = f"learn-{uuid.uuid4().hex[:6]}"
    with mesh.as_key(mesh.tenant_with_key(t)) as client:
        made = client.post("/api/projects", json={"name": "p", "tickets": [{"key": "a", "name": "A"}]}).json()
        project = made["project"]["id"]
        added = client.post(
            f"/api/projects/{project}/conventions",
            json={"category": "testing", "content": "Tests live in tests/"},
        )
        assert added.status_code == 201, added.text
        tenant_wide = client.post("/api/conventions", json={"content": "Use ruff"})
        assert tenant_wide.status_code == 201, tenant_wide.text
        listed = client.get(f"/api/projects/{project}/conventions").json()["items"]
        assert "Tests live in tests/" in [c["content"] for c in listed]
        for bad in ({"content": ""}, {"content": "x" * 1001}, {"category": "no spaces!", "content": "x"}, {}):
            assert client.post("/api/conventions", json=bad).status_code == 422, bad
        assert [c["content"] for c in client.get("/api/conventions").json()["items"]] == ["Use ruff"]

        held = mesh.ticketing.ClaimTicket(tpb.ClaimTicketRequest(tenant_id=t, agent_id="agent-1"))
        mesh.ticketing.ReportFailure(
            tpb.ReportFailureRequest(
                tenant_id=t,
                ticket_id=held.ticket.id,
                claim_token=held.lease.claim_token,
                reason="the build needs Python 3.12",
            )
        )
        learnings = client.get(f"/api/projects/{project}/learnings").json()["items"]
        assert any("Python 3.12" in x["content"] for x in learnings), learnings
        gone = client.delete(f"/api/learnings/{learnings[0]['id']}")
        assert gone.status_code == 200, gone.text
        assert client.get(f"/api/projects/{project}/learnings").json()["items"] == learnings[1:]
        assert client.delete(f"/api/learnings/{learnings[0]['id']}").status_code == 404
        assert client.delete(f"/api/conventions/{added.json()['id']}").status_code == 200
        assert client.delete(f"/api/conventions/{added.json()['id']}").status_code == 404
