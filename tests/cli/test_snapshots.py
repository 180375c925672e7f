"""`swarm snapshots`: a real local repository rolled back through the CLI."""

from __future__ import annotations

from pathlib import Path

from swarmagent.gitops import Author, init_repository
from tests.cli.runner import Swarm
from tests.support.gitwork import git, push_commit
from tests.support.mesh import Mesh

FAKE = "00000000-0000-4000-8000-000000000000"


def test_plan_and_roll_back_to_a_snapshot(swarm: Swarm, mesh: Mesh, tmp_path: Path) -> None:
    assert mesh.repository_root is not None
    bare = mesh.repository_root / swarm.tenant / "app.git"
    init_repository(bare, {"README.md": "hello\n"}, Author("Test", "test@example.invalid"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: p\nrepository: {bare}\ntickets:\n  - {{key: a, name: A}}\n")
    project = swarm.json("project", "create", "-f", str(spec))["project"]["id"]
    (pre_design,) = swarm.json("snapshots", "ls", project)["items"]
    assert pre_design["snapshot_type"] == "pre_design"
    assert pre_design["id"] in swarm("snapshots", "ls", project).stdout

    work = tmp_path / "work"
    bad_head = push_commit(bare, work)

    plan = swarm("snapshots", "plan", project, pre_design["id"]).stdout
    assert f"from {bad_head[:12]} to {pre_design['commit_sha'][:12]}" in plan
    assert "commits leaving (1)" in plan and "bad change" in plan
    # Without --yes it asks; "n" changes nothing.
    declined = swarm.run("snapshots", "rollback", project, pre_design["id"], input="n\n")
    assert declined.exit_code == 1
    assert git(bare, "rev-parse", "refs/heads/main") == bad_head

    done = swarm("snapshots", "rollback", project, pre_design["id"], "--yes").stdout
    assert f"rolled back main to {pre_design['commit_sha'][:12]} (done)" in done
    assert git(bare, "rev-parse", "refs/heads/main") == pre_design["commit_sha"]
    assert any(s["snapshot_type"] == "pre_rollback" for s in swarm.json("snapshots", "ls", project)["items"])


def test_a_project_without_a_repository_has_no_snapshots(swarm: Swarm, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: p\ntickets:\n  - {key: a, name: A}\n")
    project = swarm.json("project", "create", "-f", str(spec))["project"]["id"]
    assert "snapshots of" in swarm("snapshots", "ls", project).stdout
    refused = swarm("snapshots", "create", project, code=1)
    assert refused.stderr.startswith("error: 409") and "names no git repository" in refused.stderr
    assert swarm("snapshots", "plan", FAKE, FAKE, code=1).stderr.startswith("error: 404")
