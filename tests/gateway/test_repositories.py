"""A project naming a repository its tenant may not use is refused through
the REST API with a 4xx that names the problem, and nothing is created."""

from __future__ import annotations

import uuid

from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh

pytestmark = BACKENDS


def test_a_repository_outside_the_tenants_allow_list_is_a_4xx(mesh: Mesh) -> None:
    tid = f"repos-{uuid.uuid4().hex[:6]}"
    key = mesh.tenant_with_key(tid)
    project = {"name": "p", "tickets": [{"key": "a", "name": "A"}]}
    with mesh.as_key(key) as client:
        denied = client.post("/api/projects", json=project | {"repository": "https://github.com/other/x.git"})
        assert denied.status_code == 403, denied.text
        error = denied.json()["error"]
        assert (error["status"], error["reason"], error["field"]) == (
            "PERMISSION_DENIED",
            "REPOSITORY_NOT_ALLOWED",
            "repository",
        )
        assert f"tenant {tid}" in error["message"]
        local = client.post("/api/projects", json=project | {"repository": "/srv/git/other/x.git"})
        # Local repositories are enabled in this mesh, but only under the tenant's own directory.
        assert (
            local.status_code == 403
            and "local repositories must be under" in local.json()["error"]["message"]
        )
        assert f"/{tid}/" in local.json()["error"]["message"]
        bad = client.post("/api/projects", json=project | {"repository": "ext::sh -c id"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "repository"
        assert client.get("/api/projects").json()["items"] == []
