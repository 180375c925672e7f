"""Snapshot and rollback routes through the gateway: a project without a
repository is 409 naming it, unknown snapshots 404, bad bodies 422, and
nothing is written. (The git side, with a real repository, is in
tests/ticketing/test_snapshots.py: the local mesh enables no local repositories.)"""

from __future__ import annotations

import uuid

from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh

pytestmark = BACKENDS
FAKE = "00000000-0000-4000-8000-000000000000"


def test_snapshot_routes_refuse_a_project_without_a_repository(mesh: Mesh) -> None:
    t = f"snap-{uuid.uuid4().hex[:6]}"
    key = mesh.tenant_with_key(t)
    with mesh.as_key(key) as client:
        made = client.post("/api/projects", json={"name": "p", "tickets": [{"key": "a", "name": "A"}]})
        pid = made.json()["project"]["id"]
        listed = client.get(f"/api/projects/{pid}/snapshots")
        assert listed.status_code == 200 and listed.json() == {"items": [], "next_page_token": ""}
        taken = client.post(f"/api/projects/{pid}/snapshots", json={"description": "before"})
        assert taken.status_code == 409, taken.text
        assert "names no git repository" in taken.json()["error"]["message"]
        body = {"snapshot_id": FAKE, "expected_head": "a" * 40}
        refused = client.post(f"/api/projects/{pid}/rollback", json=body)
        assert refused.status_code == 409 and refused.json()["error"]["reason"] == "NO_REPOSITORY"
        assert client.get(f"/api/projects/{pid}/snapshots/{FAKE}/plan").status_code == 409
        bad = client.post(
            f"/api/projects/{pid}/rollback", json={"snapshot_id": FAKE, "expected_head": "HEAD"}
        )
        assert bad.status_code == 422 and "expected_head" in bad.text
        assert (
            client.post(f"/api/projects/{pid}/rollback", json={"expected_head": "a" * 40}).status_code == 422
        )
        assert client.get(f"/api/projects/{pid}/snapshots/not-an-id/plan").status_code == 422
        assert client.get(f"/api/projects/{FAKE}/snapshots").status_code == 404
        assert client.get(f"/api/projects/{pid}/snapshots").json()["items"] == []
        tickets = client.get("/api/tickets").json()["items"]
        assert [x["state"] for x in tickets] == ["ready"], "nothing was cancelled"
