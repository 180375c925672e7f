"""`swarm trace TICKET`: the ticket's trace as a text waterfall."""

from __future__ import annotations

from typing import Annotated

import typer

from swarmcli.context import tenant_api
from swarmcli.output import print_json


def trace(
    ctx: typer.Context,
    ticket_id: Annotated[str, typer.Argument(help="The ticket's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The spans as the gateway's JSON.")] = False,
) -> None:
    """Every span of a ticket (gateway → ticketing → agent → git/LLM) with durations."""
    with tenant_api(ctx) as api:
        if as_json:
            print_json(api.get(f"/api/tickets/{ticket_id}/trace"))
            return
        # The gateway renders the waterfall (swarmcommon.waterfall) itself.
        text = api.request("GET", f"/api/tickets/{ticket_id}/trace", params={"format": "text"}).text
    typer.echo(text.rstrip("\n"))
