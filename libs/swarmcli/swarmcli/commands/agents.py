"""`swarm agents ls/spawn/stop`: the tenant's agent VMs (GET/POST /api/agents,
DELETE /api/agents/{id}), served by vmhost."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from swarmcli.context import tenant_api
from swarmcli.output import JsonFlag, Limit, field, print_json, say, show_object, show_page

app = typer.Typer(help="Agents: list, spawn and stop the tenant's agent VMs.", no_args_is_help=True)

COLUMNS = [
    ("id", field("id")),
    ("role", field("role")),
    ("state", field("state")),
    ("driver", field("driver")),
    ("isolation", field("isolation")),
    ("address", field("address")),
    ("ticket", field("ticket_id")),
    ("why", field("state_reason")),
]


@app.command("ls")
def list_agents(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option("--state", help="starting, ready, busy, failed, stopping or terminated.")
    ] = None,
    role: Annotated[str | None, typer.Option("--role", help="Only agents of this role.")] = None,
    limit: Limit = 100,
    as_json: JsonFlag = False,
) -> None:
    """List agents and what each is working on (terminated ones with --state terminated)."""
    with tenant_api(ctx) as api:
        page = api.pages("/api/agents", limit, state=state, role=role)
    show_page(page, as_json, "agents", COLUMNS, empty="none running")


@app.command("spawn")
def spawn(
    ctx: typer.Context,
    role: Annotated[
        str, typer.Option("--role", help="coder, reviewer, security, tests, judge, ...")
    ] = "coder",
    template: Annotated[str | None, typer.Option("--template", help="An agent template's slug.")] = None,
    driver: Annotated[
        str | None, typer.Option("--driver", help="The isolation driver (default: the strongest).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Start an agent VM."""
    body: dict[str, Any] = {"role": role}
    if template:
        body["template"] = template
    if driver:
        body["driver"] = driver
    with tenant_api(ctx) as api:
        agent = api.post("/api/agents", body)
    if as_json:
        print_json(agent)
        return
    say(f"agent {agent['id']} ({agent['role']}) is {agent['state']} on the {agent['driver']} driver")
    shown = ["id", "role", "state", "driver", "isolation", "address", "template", "unenforced_limits"]
    show_object(agent, False, f"agent {agent['id']}", shown)


@app.command("stop")
def stop(
    ctx: typer.Context,
    agent_id: Annotated[str, typer.Argument(help="The agent's id.")],
    as_json: JsonFlag = False,
) -> None:
    """Stop an agent (its leases are released)."""
    with tenant_api(ctx) as api:
        agent = api.delete(f"/api/agents/{agent_id}")
    if as_json:
        print_json(agent)
        return
    say(
        f"agent {agent_id} is {agent['state']}"
        + (f": {agent['state_reason']}" if agent["state_reason"] else "")
    )
