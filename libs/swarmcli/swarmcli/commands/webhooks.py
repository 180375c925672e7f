"""`swarm webhooks add/ls/show/logs/test/rotate/rm`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from swarmcli.context import tenant_api
from swarmcli.output import JsonFlag, Limit, field, print_json, say, show_object, show_page, when

app = typer.Typer(help="Webhooks: subscribe URLs to events, read their delivery logs.", no_args_is_help=True)

WebhookId = Annotated[str, typer.Argument(help="The webhook's id.")]


@app.command("add")
def add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Where to POST the events.")],
    events: Annotated[
        list[str] | None, typer.Option("--event", "-e", help="An event type (repeat; default: every event).")
    ] = None,
    description: Annotated[str, typer.Option("--description", help="What it is for.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Subscribe a URL; prints the signing secret (shown only this once)."""
    body = {"url": url, "events": events or ["*"], "description": description}
    with tenant_api(ctx) as api:
        created = api.post("/api/webhooks", body)
    if as_json:
        print_json(created)
        return
    hook = created["webhook"]
    say(f"webhook {hook['id']} → {hook['url']} for {', '.join(hook['events'])}")
    say("signing secret (shown once):")
    typer.echo(created["secret"])


@app.command("ls")
def list_webhooks(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option("--state", help="active or disabled.")] = None,
    limit: Limit = 100,
    as_json: JsonFlag = False,
) -> None:
    """List webhooks and their health."""
    with tenant_api(ctx) as api:
        page = api.pages("/api/webhooks", limit, state=state)
    show_page(
        page,
        as_json,
        "webhooks",
        [
            ("id", field("id")),
            ("url", field("url")),
            ("events", field("events")),
            ("state", field("state")),
            ("failing", field("consecutive_failures")),
            ("last success", lambda w: when(w["last_success_at"])),
        ],
    )


@app.command("show")
def show(ctx: typer.Context, webhook_id: WebhookId, as_json: JsonFlag = False) -> None:
    """One webhook."""
    with tenant_api(ctx) as api:
        hook = api.get(f"/api/webhooks/{webhook_id}")
    show_object(hook, as_json, f"webhook {hook['id']}")


@app.command("logs")
def logs(
    ctx: typer.Context,
    webhook_id: WebhookId,
    outcome: Annotated[str | None, typer.Option("--outcome", help="succeeded or failed.")] = None,
    event_id: Annotated[str | None, typer.Option("--event", help="Only this event's attempts.")] = None,
    limit: Limit = 50,
    as_json: JsonFlag = False,
) -> None:
    """Delivery attempts, newest first: status, duration, error."""
    with tenant_api(ctx) as api:
        page = api.pages(f"/api/webhooks/{webhook_id}/logs", limit, outcome=outcome, event_id=event_id)
    show_page(
        page,
        as_json,
        f"deliveries of {webhook_id}",
        [
            ("when", lambda a: when(a["attempted_at"])),
            ("event", field("event_type")),
            ("attempt", field("attempt_number")),
            ("outcome", field("outcome")),
            ("status", field("response_status_code")),
            ("ms", field("duration_ms")),
            ("error", field("error")),
            ("test", field("test")),
        ],
        empty="no attempts yet",
    )


@app.command("test")
def send_test(
    ctx: typer.Context,
    webhook_id: WebhookId,
    event_type: Annotated[str, typer.Option("--event-type", help="The type the test event claims.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Send one signed test event now and show how the receiver answered."""
    body: dict[str, Any] = {"event_type": event_type} if event_type else {}
    with tenant_api(ctx) as api:
        attempt = api.post(f"/api/webhooks/{webhook_id}/test", body)
    if as_json:
        print_json(attempt)
        return
    status = attempt["response_status_code"]
    say(
        f"test {attempt['event_type']} → {attempt['outcome']} "
        f"(HTTP {status if status is not None else '-'}, {attempt['duration_ms']} ms)"
        + (f": {attempt['error']}" if attempt["error"] else "")
    )


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    webhook_id: WebhookId,
    grace: Annotated[
        int, typer.Option("--grace", min=0, help="Seconds the old secret keeps signing too.")
    ] = 24 * 3600,
    as_json: JsonFlag = False,
) -> None:
    """A new signing secret (shown once); the old one signs alongside it for --grace seconds."""
    with tenant_api(ctx) as api:
        rotated = api.post(f"/api/webhooks/{webhook_id}/rotate-secret", {"old_secret_grace_seconds": grace})
    if as_json:
        print_json(rotated)
        return
    say(f"new secret for {webhook_id}; the old one expires {when(rotated['old_secret_expires_at'])}:")
    typer.echo(rotated["secret"])


@app.command("rm")
def remove(ctx: typer.Context, webhook_id: WebhookId) -> None:
    """Delete a webhook."""
    with tenant_api(ctx) as api:
        api.delete(f"/api/webhooks/{webhook_id}")
    say(f"webhook {webhook_id} deleted")
