"""`swarm events tail` (the live Server-Sent Events stream) and `swarm events ls`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from swarmcli.client import fail
from swarmcli.context import tenant_api
from swarmcli.output import JsonFlag, Limit, field, say, show_page, when

app = typer.Typer(help="The tenant's events: stored, or live as they happen.", no_args_is_help=True)

Types = Annotated[
    list[str] | None, typer.Option("--type", "-t", help="An event type to show (repeat; default: all).")
]


def sse_frames(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Server-Sent Events frames ({"id", "event", "data"}); comments are skipped."""
    frame: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            frame[name] = f"{frame[name]}\n{value}" if name == "data" and name in frame else value


def show_event(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(event))  # one JSON object per line
    else:
        data = event.get("data") or {}
        about = event["subject"] or data.get("ticket_id") or data.get("project_id") or "-"
        say(f"{when(event['created_at'])}  {event['type']:<28} {about}  {event['id']}")


@app.command("tail")
def tail(
    ctx: typer.Context,
    types: Types = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Replay stored events from this time first (ISO 8601).")
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=0, help="Stop after this many (0: never).")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="One event per line as the gateway's JSON.")
    ] = False,
) -> None:
    """Follow events live (Ctrl-C stops); reconnects where it left off."""
    seen: set[str] = set()  # a replay and the live stream may overlap: each event once
    last_id = ""
    with tenant_api(ctx) as api:
        try:
            while True:  # the gateway may end a stream: resume after the last event shown
                resume = {"Last-Event-ID": last_id} if last_id else {}
                params = {"types": types or [], "since": None if last_id else since}
                with api.stream("/api/events/stream", params, resume) as lines:
                    for frame in sse_frames(lines):
                        data = json.loads(frame["data"])
                        if frame.get("event") == "error":
                            raise fail(f"the stream ended: {data.get('status')}: {data.get('message')}")
                        last_id = frame.get("id", last_id)
                        if data["id"] in seen:
                            continue
                        seen.add(data["id"])
                        show_event(data, as_json)
                        if count and len(seen) >= count:
                            return
        except KeyboardInterrupt:
            return


@app.command("ls")
def list_events(
    ctx: typer.Context,
    types: Types = None,
    subject: Annotated[str, typer.Option("--subject", help="Only events about this object id.")] = "",
    since: Annotated[str | None, typer.Option("--since", help="From this time (ISO 8601).")] = None,
    limit: Limit = 50,
    as_json: JsonFlag = False,
) -> None:
    """Stored events, newest first."""
    with tenant_api(ctx) as api:
        page = api.pages("/api/events", limit, types=types or [], subject=subject, since=since)
    show_page(
        page,
        as_json,
        "events",
        [
            ("when", lambda e: when(e["created_at"])),
            ("type", field("type")),
            ("about", lambda e: e["subject"] or e["data"].get("ticket_id") or e["data"].get("project_id")),
            ("id", field("id")),
        ],
    )
