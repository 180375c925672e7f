"""`swarm projects` and `swarm project create/show/progress/cancel`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from swarmcli.client import fail
from swarmcli.commands.waiting import wait_for_project
from swarmcli.context import tenant_api
from swarmcli.output import JsonFlag, Limit, field, minutes, print_json, say, show_object, show_page, when

app = typer.Typer(help="Create a project and follow it; show one.", no_args_is_help=True)

ProjectId = Annotated[str, typer.Argument(help="The project's id.")]


def list_projects(ctx: typer.Context, limit: Limit = 100, as_json: JsonFlag = False) -> None:
    """List the tenant's projects."""
    with tenant_api(ctx) as api:
        page = api.pages("/api/projects", limit)
    show_page(
        page,
        as_json,
        "projects",
        [
            ("id", field("id")),
            ("name", field("name")),
            ("tickets", field("ticket_count")),
            ("done", field("done_count")),
            ("pattern", field("pattern")),
            ("created", lambda p: when(p["created_at"])),
        ],
        empty="none yet (swarm project create -f spec.yaml)",
    )


def read_spec(path: Path) -> dict[str, Any]:
    """The YAML (or JSON) spec: the body of POST /api/projects."""
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="-f") from None
    except yaml.YAMLError as exc:
        raise typer.BadParameter(f"{path} is not valid YAML: {exc}", param_hint="-f") from None
    if not isinstance(spec, dict):
        raise typer.BadParameter(f"{path} must hold a mapping (name, tickets, ...)", param_hint="-f")
    return spec


@app.command("create")
def create(
    ctx: typer.Context,
    spec_file: Annotated[
        Path, typer.Option("-f", "--file", help="The project spec (YAML): the body of POST /api/projects.")
    ],
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Follow the tickets until each is done, cancelled or quarantined."),
    ] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between polls.")] = 1.0,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Give up waiting after this many seconds (0: never).")
    ] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Submit a project. With --wait, show live progress per stage and the ETA,
    then a summary; exit 1 if a ticket ended quarantined or cancelled."""
    spec = read_spec(spec_file)
    with tenant_api(ctx) as api:
        created = api.post("/api/projects", spec)
        project = created["project"]
        if as_json and not wait:
            print_json(created)
            return
        if not as_json:
            say(
                f"project [bold]{project['name']}[/] {project['id']} created with "
                f"{project['ticket_count']} tickets"
            )
        if not wait:
            return
        tickets = wait_for_project(api, project["id"], interval, timeout, quiet=as_json)
    if as_json:
        print_json({**created, "tickets": tickets})
    unfinished = [t for t in tickets if t["state"] != "done"]
    if unfinished:
        raise fail(f"{len(unfinished)} of {len(tickets)} tickets did not finish (quarantined or cancelled)")


@app.command("show")
def show(ctx: typer.Context, project_id: ProjectId, as_json: JsonFlag = False) -> None:
    """One project."""
    with tenant_api(ctx) as api:
        project = api.get(f"/api/projects/{project_id}")
    show_object(project, as_json, f"project {project['name']}")


@app.command("progress")
def progress(ctx: typer.Context, project_id: ProjectId, as_json: JsonFlag = False) -> None:
    """% complete, tickets by state, and the ETA."""
    with tenant_api(ctx) as api:
        p = api.get(f"/api/projects/{project_id}/progress")
    if as_json:
        print_json(p)
        return
    say(
        f"{p['percent_complete']:.0f}% complete: {p['done']}/{p['ticket_count']} done, "
        f"{p['in_progress']} in progress, {p['queued']} queued, {p['quarantined']} quarantined, "
        f"{p['cancelled']} cancelled"
    )
    say(
        f"ETA {when(p['eta'])} (in {minutes(p['eta_minutes'])}; {minutes(p['remaining_minutes'])} "
        f"of work left, critical path {minutes(p['critical_path_minutes'])}, "
        f"{p['working_agents']} agents working)"
    )


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    project_id: ProjectId,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in each ticket's history).")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Cancel every ticket of the project that is not done yet."""
    with tenant_api(ctx) as api:
        result = api.post(f"/api/projects/{project_id}/cancel", {"reason": reason} if reason else {})
    if as_json:
        print_json(result)
        return
    say(f"cancelled {len(result['tickets'])} tickets")
