"""`swarm project create --wait` while real agent processes work the tickets
(`python -m swarmagent.agent` with tests.cli.work:finish)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.runner import Swarm
from tests.support.mesh import Mesh

REPO = Path(__file__).resolve().parents[2]

DAG = """\
name: shipped
tickets:
  - {key: design, name: Design the API, stages: [coder]}
  - {key: api, name: Implement the API, depends_on: [design], stages: [coder, reviewer]}
  - {key: docs, name: Document the API, depends_on: [design], stages: [coder, reviewer]}
"""
WITH_POISON = """\
name: partly-poisoned
tickets:
  - {key: ok, name: Add a helper, stages: [coder]}
  - {key: bad, name: poison ticket, stages: [coder]}
"""


@pytest.fixture
def agents(mesh: Mesh, swarm: Swarm) -> Iterator[None]:
    """A coder and a reviewer working the tenant's tickets until stopped."""
    target = mesh.app.state.settings.ticketing_target
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "SWARM_AGENT_LOG_LEVEL": "WARNING"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "swarmagent.agent",
                "--ticketing",
                target,
                "--tenant",
                swarm.tenant,
                "--agent-id",
                f"{role}-1",
                "--role",
                role,
                "--work",
                "tests.cli.work:finish",
            ],
            cwd=REPO,
            env=env,
        )  # fmt: skip
        for role in ("coder", "reviewer")
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _spec(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_wait_shows_progress_per_stage_and_ends_with_a_summary(
    swarm: Swarm, agents: None, tmp_path: Path
) -> None:
    out = swarm(
        "project", "create", "-f", _spec(tmp_path, "dag.yaml", DAG), "--wait", "--interval", "0.2"
    ).stdout
    lines = out.splitlines()
    assert "created with 3 tickets" in lines[0]
    progress = [line for line in lines if " finished · " in line]
    assert progress, out
    # Progress lines name stages and states, and the ETA from /progress.
    assert any("coder:" in line for line in progress) and all("ETA" in line for line in progress)
    assert progress[-1].split("] ", 1)[1].startswith("3/3 finished · done: done 3")
    summary = out[out.index("summary: 3 done") :]
    for name in ("Design the API", "Implement the API", "Document the API"):
        assert name in summary
    assert "coder → reviewer" in summary

    tickets = swarm.json("tickets", "ls")["items"]
    assert {t["state"] for t in tickets} == {"done"}


def test_wait_exits_1_when_a_ticket_is_quarantined(swarm: Swarm, agents: None, tmp_path: Path) -> None:
    spec = _spec(tmp_path, "poison.yaml", WITH_POISON)
    result = swarm("project", "create", "-f", spec, "--wait", "--interval", "0.2", code=1)
    summary = result.stdout[result.stdout.index("summary: ") :]
    assert "1 done" in summary.splitlines()[0] and "1 quarantined" in summary.splitlines()[0]
    assert "cannot make sense of 'poison ticket'" in summary
    assert result.stderr == "error: 1 of 2 tickets did not finish (quarantined or cancelled)\n"


def test_wait_with_json_prints_the_finished_tickets(swarm: Swarm, agents: None, tmp_path: Path) -> None:
    spec = _spec(tmp_path, "dag.yaml", DAG)
    result = swarm("project", "create", "-f", spec, "--wait", "--interval", "0.2", "--json")
    body = json.loads(result.stdout)
    assert body["project"]["name"] == "shipped"
    assert [t["state"] for t in body["tickets"]] == ["done", "done", "done"]
