"""`swarm tickets ls/show/edit/cancel/history`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from swarmcli.client import usage_error
from swarmcli.context import tenant_api
from swarmcli.output import JsonFlag, Limit, field, print_json, say, show_object, show_page, when

app = typer.Typer(help="Tickets: list, show, fix and cancel.", no_args_is_help=True)

TicketId = Annotated[str, typer.Argument(help="The ticket's id.")]
Reason = Annotated[str, typer.Option("--reason", help="Why (kept in the ticket's history).")]

COLUMNS = [
    ("id", field("id")),
    ("name", field("name")),
    ("state", field("state")),
    ("stage", lambda t: "/".join(t["stages"][t["stage_index"] : t["stage_index"] + 1]) or "-"),
    ("priority", field("priority")),
    ("failures", field("failure_count")),
    ("updated", lambda t: when(t["updated_at"])),
]
SHOWN = [
    "id", "project_id", "name", "description", "type", "state", "stages", "stage_index", "priority",
    "depends_on", "lease", "failure_count", "last_failure_reason", "quarantine_reason", "quarantine_cause",
    "cost_cap_usd_micros", "pattern", "estimate", "actual_minutes", "result", "created_at", "updated_at",
]  # fmt: skip


@app.command("ls")
def list_tickets(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option("--project", help="Only this project's tickets.")] = None,
    state: Annotated[str | None, typer.Option("--state", help="e.g. ready, in_progress, done.")] = None,
    role: Annotated[
        str | None, typer.Option("--role", help="Only tickets at this stage, e.g. coder.")
    ] = None,
    limit: Limit = 100,
    as_json: JsonFlag = False,
) -> None:
    """List tickets, newest first."""
    with tenant_api(ctx) as api:
        page = api.pages("/api/tickets", limit, project_id=project, state=state, role=role)
    show_page(page, as_json, "tickets", COLUMNS)


@app.command("show")
def show(ctx: typer.Context, ticket_id: TicketId, as_json: JsonFlag = False) -> None:
    """One ticket with its lease, failures, estimate and result."""
    with tenant_api(ctx) as api:
        ticket = api.get(f"/api/tickets/{ticket_id}")
    show_object(ticket, as_json, f"ticket {ticket['name']}", SHOWN)


@app.command("edit")
def edit(
    ctx: typer.Context,
    ticket_id: TicketId,
    description: Annotated[str | None, typer.Option("--description", help="The new description.")] = None,
    description_file: Annotated[
        Path | None, typer.Option("--description-file", help="Read the new description from a file.")
    ] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="The new priority.")] = None,
    stages: Annotated[
        list[str] | None, typer.Option("--stage", help="The new stages, in order (repeat the flag).")
    ] = None,
    reason: Reason = "",
    as_json: JsonFlag = False,
) -> None:
    """Fix a ticket nobody is working on (blocked, ready or quarantined)."""
    if description is not None and description_file is not None:
        raise usage_error("give --description or --description-file, not both")
    if description_file is not None:
        try:
            description = description_file.read_text()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {description_file}: {exc.strerror}") from None
    body: dict[str, Any] = {"description": description, "priority": priority, "stages": stages or None}
    body = {k: v for k, v in body.items() if v is not None}
    if not body:
        raise usage_error("nothing to change: give --description, --priority or --stage")
    if reason:
        body["reason"] = reason
    with tenant_api(ctx) as api:
        ticket = api.patch(f"/api/tickets/{ticket_id}", body)
    if as_json:
        print_json(ticket)
        return
    changed = ", ".join(k for k in body if k != "reason")
    say(f"ticket {ticket['id']} updated ({changed}); now {ticket['state']}")


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    ticket_id: TicketId,
    reason: Reason = "",
    cascade: Annotated[
        bool, typer.Option("--cascade", help="Also cancel the tickets that depend on it.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Stop a ticket for good (its agent's lease is revoked)."""
    body: dict[str, Any] = {"cascade": cascade}
    if reason:
        body["reason"] = reason
    with tenant_api(ctx) as api:
        result = api.post(f"/api/tickets/{ticket_id}/cancel", body)
    if as_json:
        print_json(result)
        return
    for t in result["tickets"]:
        say(f"cancelled {t['id']} ({t['name']})")


@app.command("history")
def history(ctx: typer.Context, ticket_id: TicketId, limit: Limit = 100, as_json: JsonFlag = False) -> None:
    """What happened to a ticket, oldest first."""
    with tenant_api(ctx) as api:
        page = api.pages(f"/api/tickets/{ticket_id}/events", limit)
    show_page(
        page,
        as_json,
        f"history of {ticket_id}",
        [
            ("when", lambda e: when(e["created_at"])),
            ("event", field("event_type")),
            ("by", lambda e: f"{e['actor_type']} {e['actor_id'] or ''}".strip()),
            ("from", field("old_value")),
            ("to", field("new_value")),
            ("why", field("rationale")),
        ],
    )
