"""`swarm dlq ls/redrive`: the dead-letter queue (quarantined tickets)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from swarmcli.context import tenant_api
from swarmcli.output import JsonFlag, Limit, field, print_json, say, show_page, when

app = typer.Typer(help="The dead-letter queue: tickets quarantined after failing.", no_args_is_help=True)


@app.command("ls")
def list_dead_letters(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option("--project", help="Only this project's tickets.")] = None,
    limit: Limit = 100,
    as_json: JsonFlag = False,
) -> None:
    """List quarantined tickets and why they were quarantined."""
    with tenant_api(ctx) as api:
        page = api.pages("/api/dead-letters", limit, project_id=project)
    show_page(
        page,
        as_json,
        "dead letters",
        [
            ("id", field("id")),
            ("name", field("name")),
            ("failures", field("failure_count")),
            ("cause", field("quarantine_cause")),
            ("reason", field("quarantine_reason")),
            ("since", lambda t: when(t["quarantined_at"])),
        ],
        empty="empty",
    )


@app.command("redrive")
def redrive(
    ctx: typer.Context,
    ticket_ids: Annotated[
        list[str], typer.Argument(help="The quarantined tickets to put back in the queue.")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in each ticket's history).")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Put quarantined tickets back in the queue with a fresh failure count."""
    body: dict[str, Any] = {"ticket_ids": ticket_ids}
    if reason:
        body["reason"] = reason
    with tenant_api(ctx) as api:
        result = api.post("/api/dead-letters/redrive", body)
    if as_json:
        print_json(result)
        return
    for t in result["tickets"]:
        say(f"redriven {t['id']} ({t['name']}): now {t['state']}")
