"""`swarm usage`: quota bars and LLM cost by project, agent type and model."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from swarmcli.context import tenant_api
from swarmcli.output import console, print_json, table, usd, when

GROUPS = ("project", "agent_type", "model")
# Resources counted in micro-dollars rather than units.
MONEY = {"cost_usd_month", "cost_usd_per_ticket"}


def amount(resource: str, value: int | None) -> str:
    if value is None:
        return "∞"
    return usd(value) if resource in MONEY else str(value)


def gauge(used: int, limit: int | None, width: int = 30) -> Text:
    """A bar drawn with characters, so it shows in a pipe or a log too."""
    if not limit:
        return Text("unlimited", style="dim")
    share = used / limit
    filled = min(width, round(width * share))
    style = "red" if share >= 0.9 else "yellow" if share >= 0.7 else "green"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"), f" {share:.0%}")


def quota_table(quota: dict[str, Any]) -> Table:
    t = Table(title=f"quota ({quota['plan']} plan)", title_justify="left", header_style="bold")
    for header in ("resource", "used", "limit", "", "resets"):
        t.add_column(header)
    for r in quota["resources"]:
        used, limit = r["used"], r["limit"]
        used_text, limit_text = amount(r["resource"], used), amount(r["resource"], limit)
        t.add_row(r["resource"], used_text, limit_text, gauge(used, limit), when(r["resets_at"]))
    return t


def cost_table(group: str, usage: dict[str, Any]) -> Table:
    return table(
        f"LLM cost by {group.replace('_', ' ')} (total {usd(usage['total']['cost_usd_micros'])})",
        [
            (group.replace("_", " "), lambda r: r["key"] or "-"),
            ("calls", lambda r: r["totals"]["request_count"]),
            ("input tokens", lambda r: r["totals"]["input_tokens"]),
            ("output tokens", lambda r: r["totals"]["output_tokens"]),
            ("cost", lambda r: usd(r["totals"]["cost_usd_micros"])),
            ("share", lambda r: f"{r['share_of_cost']:.0%}"),
        ],
        usage["rows"],
    )


def usage(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option("--since", help="Cost from this time (ISO 8601) (default: this month).")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="Cost until this time (ISO 8601).")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Only this project's cost.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='The gateway\'s JSON: {"quota": ..., "cost": {group: ...}}.')
    ] = False,
) -> None:
    """Quota used against each limit, and what the LLM calls cost."""
    with tenant_api(ctx) as api:
        quota = api.get("/api/quota/usage")
        cost = {
            g: api.get("/api/usage", group_by=g, since=since, until=until, project_id=project, page_size=1000)
            for g in GROUPS
        }
    if as_json:
        print_json({"quota": quota, "cost": cost})
        return
    out = console()
    out.print(quota_table(quota))
    for group in GROUPS:
        if cost[group]["rows"]:
            out.print(cost_table(group, cost[group]))
        else:
            out.print(f"LLM cost by {group.replace('_', ' ')}: no LLM calls in this range")
