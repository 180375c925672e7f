"""`swarm templates ...`: the tenant's agent templates, their versions, and
deployments (canary rollouts) with promote and rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from swarmcli.client import error_message, fail
from swarmcli.context import tenant_api
from swarmcli.output import JsonFlag, console, field, print_json, say, show_page, table, when

app = typer.Typer(help="Agent templates, versions and their canary deployments.", no_args_is_help=True)

Slug = Annotated[str, typer.Argument(help="The template's slug.")]
DeploymentIds = Annotated[list[str], typer.Argument(help="Deployment ids.")]
DEPLOYMENT_COLUMNS = [
    ("id", field("id")),
    ("agent type", field("agent_type")),
    ("status", field("status")),
    ("rollout", lambda d: f"{d['rollout_percent']}%"),
    ("ladder", field("ladder")),
    ("ok", field("success_count")),
    ("failed", field("failure_count")),
    ("failure rate", lambda d: f"{d['failure_rate']:.0%}"),
    ("updated", lambda d: when(d["updated_at"])),
]


@app.command("ls")
def list_templates(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List templates (needs a gateway with GET /api/templates)."""
    with tenant_api(ctx) as api:
        response = api.request("GET", "/api/templates", allow=(404, 405))
    if response.status_code in (404, 405):
        raise fail(
            f"this gateway cannot list templates ({error_message(response)}); "
            "show one with `swarm templates show SLUG`"
        )
    answer = response.json()
    if as_json:
        print_json(answer)
        return
    page = {"items": answer} if isinstance(answer, list) else answer
    show_page(
        page,
        False,
        "templates",
        [
            ("slug", field("slug")),
            ("agent type", field("agent_type")),
            ("owner", field("owner")),
            ("name", field("name")),
        ],
    )


@app.command("show")
def show(ctx: typer.Context, slug: Slug, as_json: JsonFlag = False) -> None:
    """A template and its versions."""
    with tenant_api(ctx) as api:
        detail = api.get(f"/api/templates/{slug}")
    if as_json:
        print_json(detail)
        return
    t = detail["template"]
    say(f"[bold]{t['slug']}[/] ({t['agent_type']}, {t['owner']}): {t['name']}")
    if t["description"]:
        say(t["description"])
    console().print(
        table(
            "versions",
            [
                ("version", field("version")),
                ("model", field("model")),
                ("prompt", lambda v: v["prompt"] if len(v["prompt"]) < 80 else v["prompt"][:77] + "..."),
                ("id", field("id")),
            ],
            detail["versions"],
        )
    )


@app.command("create")
def create(
    ctx: typer.Context,
    slug: Slug,
    agent_type: Annotated[str, typer.Option("--agent-type", help="coder, reviewer, ...")],
    name: Annotated[str, typer.Option("--name", help="A human name.")],
    description: Annotated[str, typer.Option("--description")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Create a template (add versions with `add-version`)."""
    body = {"slug": slug, "agent_type": agent_type, "name": name, "description": description}
    with tenant_api(ctx) as api:
        created = api.post("/api/templates", body)
    if as_json:
        print_json(created)
        return
    say(f"template {created['slug']} ({created['agent_type']}) created")


@app.command("add-version")
def add_version(
    ctx: typer.Context,
    slug: Slug,
    prompt_file: Annotated[Path, typer.Option("--prompt-file", "-f", help="The system prompt.")],
    model: Annotated[str, typer.Option("--model", help="The model (default: the platform's).")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Add a version with a new prompt."""
    try:
        prompt = prompt_file.read_text()
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {prompt_file}: {exc.strerror}", param_hint="--prompt-file"
        ) from None
    body: dict[str, Any] = {"prompt": prompt}
    if model:
        body["model"] = model
    with tenant_api(ctx) as api:
        version = api.post(f"/api/templates/{slug}/versions", body)
    if as_json:
        print_json(version)
        return
    say(f"{slug} version {version['version']} added")


@app.command("deploy")
def deploy(
    ctx: typer.Context,
    slug: Slug,
    version: Annotated[int, typer.Argument(help="The version to roll out.")],
    percent: Annotated[int, typer.Option("--percent", min=0, max=100, help="Start at this share.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Roll a version out (a canary below 100%)."""
    with tenant_api(ctx) as api:
        d = api.post("/api/deployments", {"slug": slug, "version": version, "rollout_percent": percent})
    if as_json:
        print_json(d)
        return
    say(f"deployment {d['id']}: {slug} v{version} at {d['rollout_percent']}% ({d['status']})")


@app.command("deployments")
def deployments(ctx: typer.Context, deployment_ids: DeploymentIds, as_json: JsonFlag = False) -> None:
    """Show deployments: status, rollout share, canary counters."""
    with tenant_api(ctx) as api:
        found = [api.get(f"/api/deployments/{d}") for d in deployment_ids]
    show_page({"items": found}, as_json, "deployments", DEPLOYMENT_COLUMNS)


def _changed(d: dict[str, Any], as_json: bool, verb: str) -> None:
    if as_json:
        print_json(d)
        return
    say(f"deployment {d['id']} {verb}: {d['status']} at {d['rollout_percent']}%")


@app.command("promote")
def promote(
    ctx: typer.Context,
    deployment_id: Annotated[str, typer.Argument(help="The deployment's id.")],
    percent: Annotated[
        int | None, typer.Option("--percent", min=1, max=100, help="The new share (default: the next step).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Widen a canary (to --percent, or its ladder's next step)."""
    body = {"rollout_percent": percent} if percent is not None else {}
    with tenant_api(ctx) as api:
        d = api.post(f"/api/deployments/{deployment_id}/promote", body)
    _changed(d, as_json, "promoted")


@app.command("rollback")
def rollback(
    ctx: typer.Context,
    deployment_id: Annotated[str, typer.Argument(help="The deployment's id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Send every ticket back to the stable version."""
    with tenant_api(ctx) as api:
        d = api.post(f"/api/deployments/{deployment_id}/rollback", {"reason": reason} if reason else {})
    _changed(d, as_json, "rolled back")
