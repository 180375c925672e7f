"""Projects, tickets and the dead-letter queue through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.runner import Swarm
from tests.support.mesh import Mesh
from tests.support.ticketing import claim, fail

SPEC = """\
name: cli-project
description: made by the CLI tests
tickets:
  - key: design
    name: Design the API
    priority: 10
  - key: api
    name: Implement REST endpoints
    depends_on: [design]
    stages: [coder, reviewer]
"""


def _spec(tmp_path: Path, text: str = SPEC) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return str(path)


def test_create_a_project_from_yaml_then_list_it(swarm: Swarm, tmp_path: Path) -> None:
    created = swarm("project", "create", "-f", _spec(tmp_path)).stdout
    assert "project cli-project" in created and "created with 2 tickets" in created
    listed = swarm.json("projects")
    [project] = listed["items"]
    assert project["name"] == "cli-project" and project["ticket_count"] == 2
    assert project["id"] in created
    table = swarm("projects").stdout
    assert "cli-project" in table and project["id"] in table
    shown = swarm.json("project", "show", project["id"])
    assert shown == project
    progress = swarm("project", "progress", project["id"]).stdout
    assert "0/2 done" in progress and "ETA" in progress


def test_project_create_json_is_the_gateways_answer(swarm: Swarm, tmp_path: Path) -> None:
    body = swarm.json("project", "create", "-f", _spec(tmp_path))
    assert body["project"]["name"] == "cli-project"
    assert [t["name"] for t in body["tickets"]] == ["Design the API", "Implement REST endpoints"]


def test_a_spec_the_gateway_refuses_names_the_field(swarm: Swarm, tmp_path: Path) -> None:
    cyclic = "name: loop\ntickets:\n  - {key: a, name: A, depends_on: [b]}\n"
    cyclic += "  - {key: b, name: B, depends_on: [a]}\n"
    result = swarm("project", "create", "-f", _spec(tmp_path, cyclic), code=1)
    assert result.stderr.startswith("error: 400 INVALID_ARGUMENT:") and "cycle" in result.stderr
    assert swarm.json("projects")["items"] == []  # nothing was written


def test_an_unreadable_spec_is_a_usage_error(swarm: Swarm, tmp_path: Path) -> None:
    missing = swarm("project", "create", "-f", str(tmp_path / "nope.yaml"), code=2)
    assert "nope.yaml" in missing.stderr
    broken = swarm("project", "create", "-f", _spec(tmp_path, "name: [unclosed\n"), code=2)
    assert "not valid YAML" in broken.stderr


def test_tickets_list_show_edit_and_cancel(swarm: Swarm, tmp_path: Path) -> None:
    project = swarm.json("project", "create", "-f", _spec(tmp_path))["project"]["id"]
    tickets = swarm.json("tickets", "ls", "--project", project)["items"]
    by_name = {t["name"]: t for t in tickets}
    design, api = by_name["Design the API"], by_name["Implement REST endpoints"]
    assert (design["state"], api["state"]) == ("ready", "blocked")
    ready = swarm("tickets", "ls", "--project", project, "--state", "ready").stdout
    assert design["id"] in ready and api["id"] not in ready

    shown = swarm("tickets", "show", api["id"]).stdout
    assert "Implement REST endpoints" in shown and "blocked" in shown and "coder, reviewer" in shown

    edited = swarm("tickets", "edit", api["id"], "--priority", "7", "--description", "now with paging")
    assert "updated (description, priority)" in edited.stdout
    after = swarm.json("tickets", "show", api["id"])
    assert (after["priority"], after["description"]) == (7, "now with paging")
    nothing = swarm("tickets", "edit", api["id"], code=2)
    assert "nothing to change" in nothing.stderr

    cancelled = swarm("tickets", "cancel", design["id"], "--cascade", "--reason", "scope cut").stdout
    assert design["id"] in cancelled and api["id"] in cancelled
    assert {t["state"] for t in swarm.json("tickets", "ls", "--project", project)["items"]} == {"cancelled"}
    history = swarm.json("tickets", "history", design["id"])
    assert any("scope cut" in json.dumps(e) for e in history["items"])


def test_dead_letters_are_listed_fixed_and_redriven(swarm: Swarm, mesh: Mesh, tmp_path: Path) -> None:
    spec = "name: poison\ntickets:\n  - {key: p, name: Parse the legacy file}\n"
    ticket = swarm.json("project", "create", "-f", _spec(tmp_path, spec))["tickets"][0]["id"]
    for attempt in range(3):  # an agent fails it three times: quarantined
        claimed = claim(mesh.ticketing, swarm.tenant, "agent-1", request_id=f"claim-{attempt}")
        assert claimed.ticket.id == ticket
        fail(mesh.ticketing, swarm.tenant, claimed, "the spec has a broken line")

    dlq = swarm("dlq", "ls").stdout
    assert ticket in dlq and "the spec has a broken line" in dlq
    assert [t["id"] for t in swarm.json("dlq", "ls")["items"]] == [ticket]

    swarm("tickets", "edit", ticket, "--description", "the fixed line", "--reason", "fixed the spec")
    redriven = swarm("dlq", "redrive", ticket, "--reason", "spec fixed").stdout
    assert f"redriven {ticket}" in redriven and "now ready" in redriven
    assert swarm.json("dlq", "ls")["items"] == []
    assert swarm("dlq", "ls").stdout.strip() == "dead letters: empty"
    again = swarm("dlq", "redrive", ticket, code=1)  # no longer quarantined: the gateway says so
    assert again.stderr.startswith("error: 409")
