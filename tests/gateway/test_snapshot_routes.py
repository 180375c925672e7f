"""Snapshot and rollback routes through the gateway: a project without a
repository is 409 naming it, unknown snapshots 404, bad bodies 422, and
nothing is written; and a rollback of a real local repository through REST,
then its record and audit entry. (Every git case is in
tests/ticketing/test_snapshots.py.)"""

from __future__ import annotations

import uuid
from pathlib import Path

from swarmagent.gitops import Author, init_repository
from tests.support.gitwork import git, push_commit
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


def test_a_rollback_through_rest_is_recorded_and_audited(mesh: Mesh, tmp_path: Path) -> None:
    assert mesh.repository_root is not None
    t = f"snap-{uuid.uuid4().hex[:6]}"
    bare = mesh.repository_root / t / "app.git"
    init_repository(bare, {"README.md": "hello\n"}, Author("Test", "test@example.invalid"))
    key = mesh.tenant_with_key(t)
    with mesh.as_key(key) as client:
        made = client.post(
            "/api/projects",
            json={"name": "p", "repository": str(bare), "tickets": [{"key": "a", "name": "A"}]},
        )
        assert made.status_code == 201, made.text
        pid = made.json()["project"]["id"]
        (pre_design,) = client.get(f"/api/projects/{pid}/snapshots").json()["items"]
        assert pre_design["snapshot_type"] == "pre_design"

        bad_head = push_commit(bare, tmp_path / "work")

        plan = client.get(f"/api/projects/{pid}/snapshots/{pre_design['id']}/plan").json()
        assert plan["head_commit"] == bad_head
        assert [c["commit_sha"] for c in plan["leaving_commits"]] == [bad_head]
        done = client.post(
            f"/api/projects/{pid}/rollback",
            json={"snapshot_id": pre_design["id"], "expected_head": plan["head_commit"]},
        )
        assert done.status_code == 200, done.text
        assert done.json()["state"] == "done" and done.json()["previous_head"] == bad_head
        assert git(bare, "rev-parse", "refs/heads/main") == pre_design["commit_sha"]

        (record,) = client.get(f"/api/projects/{pid}/rollbacks").json()["items"]
        assert record == done.json()
        (entry,) = client.get(f"/api/projects/{pid}/audit").json()["items"]
        assert entry["event_type"] == "project_rollback" and entry["actor_id"].startswith("api-key:")
        assert entry["details"] == {
            "project_id": pid,
            "snapshot_id": pre_design["id"],
            "commit_sha": pre_design["commit_sha"],
        }
    other = mesh.tenant_with_key(f"o-{uuid.uuid4().hex[:6]}")
    with mesh.as_key(other) as client:
        assert client.get(f"/api/projects/{pid}/rollbacks").status_code == 404
        assert client.get(f"/api/projects/{pid}/audit").status_code == 404
