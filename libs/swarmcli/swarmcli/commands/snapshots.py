"""`swarm snapshots ls/create/plan/rollback`: a project's repository snapshots."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from swarmcli.client import Api
from swarmcli.context import tenant_api
from swarmcli.output import JsonFlag, Limit, console, field, print_json, say, show_page, table, when

app = typer.Typer(help="Snapshots of a project's base branch, and rolling back to one.", no_args_is_help=True)

ProjectId = Annotated[str, typer.Argument(help="The project's id.")]
SnapshotId = Annotated[str, typer.Argument(help="The snapshot's id.")]


@app.command("ls")
def list_snapshots(
    ctx: typer.Context, project_id: ProjectId, limit: Limit = 100, as_json: JsonFlag = False
) -> None:
    """A project's snapshots, newest first."""
    with tenant_api(ctx) as api:
        page = api.pages(f"/api/projects/{project_id}/snapshots", limit)
    show_page(
        page,
        as_json,
        f"snapshots of {project_id}",
        [
            ("id", field("id")),
            ("type", field("snapshot_type")),
            ("branch", field("branch")),
            ("commit", lambda s: s["commit_sha"][:12]),
            ("description", field("description")),
            ("by", field("created_by")),
            ("created", lambda s: when(s["created_at"])),
        ],
        empty="none (a project without a readable repository has none)",
    )


@app.command("create")
def create(
    ctx: typer.Context,
    project_id: ProjectId,
    description: Annotated[str, typer.Option("--description", help="What this point is.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Snapshot the base branch's head now."""
    with tenant_api(ctx) as api:
        snap = api.post(f"/api/projects/{project_id}/snapshots", {"description": description})
    if as_json:
        print_json(snap)
        return
    say(f"snapshot {snap['id']} of {snap['branch']} at {snap['commit_sha'][:12]}")


def show_plan(plan: dict[str, Any]) -> None:
    out = console()
    snap = plan["snapshot"]
    out.print(
        f"rolling back {snap['branch']} from {plan['head_commit'][:12]} to {snap['commit_sha'][:12]} "
        f"({snap['snapshot_type']} snapshot {snap['id']})",
        markup=False,
    )
    parts = [
        (
            "tickets to cancel",
            plan["tickets_to_cancel"],
            [("ticket", field("ticket_id")), ("name", field("name"))],
        ),
        (
            "merge requests to close",
            plan["merge_requests_to_close"],
            [("merge request", field("merge_request_id")), ("branch", field("branch"))],
        ),
        (
            "commits leaving",
            plan["leaving_commits"],
            [("commit", field("commit_sha")), ("subject", field("subject"))],
        ),
        (
            "commits returning",
            plan["returning_commits"],
            [("commit", field("commit_sha")), ("subject", field("subject"))],
        ),
    ]
    for title, items, columns in parts:
        if items:
            out.print(table(f"{title} ({len(items)})", columns, items))
        else:
            out.print(f"{title}: none")


def fetch_plan(api: Api, project_id: str, snapshot_id: str) -> dict[str, Any]:
    plan: dict[str, Any] = api.get(f"/api/projects/{project_id}/snapshots/{snapshot_id}/plan")
    return plan


@app.command("plan")
def plan(
    ctx: typer.Context, project_id: ProjectId, snapshot_id: SnapshotId, as_json: JsonFlag = False
) -> None:
    """What a rollback to the snapshot would do now (changes nothing)."""
    with tenant_api(ctx) as api:
        found = fetch_plan(api, project_id, snapshot_id)
    if as_json:
        print_json(found)
        return
    show_plan(found)


@app.command("rollback")
def rollback(
    ctx: typer.Context,
    project_id: ProjectId,
    snapshot_id: SnapshotId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Reset the base branch to the snapshot, after showing the plan; refused
    if the branch moved since the plan was shown."""
    with tenant_api(ctx) as api:
        found = fetch_plan(api, project_id, snapshot_id)
        if not as_json:
            show_plan(found)
        if not yes and not typer.confirm("roll back?", err=True):
            raise typer.Exit(1)
        body = {"snapshot_id": snapshot_id, "expected_head": found["head_commit"]}
        done = api.post(f"/api/projects/{project_id}/rollback", body)
    if as_json:
        print_json(done)
        return
    say(
        f"rolled back {done['branch']} to {done['target_commit'][:12]} ({done['state']}): "
        f"{len(done['cancelled_ticket_ids'])} tickets cancelled, "
        f"{len(done['closed_merge_request_ids'])} merge requests closed; "
        f"undo with the pre-rollback snapshot {done['pre_rollback_snapshot_id']}"
    )
