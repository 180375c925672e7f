"""`swarm`: the root command (where the gateway is, who we are) and every
resource's commands, each group in its own module under swarmcli.commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from swarmcli.commands import (
    admin,
    agents,
    dlq,
    events,
    marketplace,
    projects,
    snapshots,
    templates,
    tickets,
    trace,
    up,
    usage,
    webhooks,
)
from swarmcli.config import Settings

app = typer.Typer(
    name="swarm",
    help="Swarm from the command line: projects, tickets, webhooks, usage and traces over the REST gateway.",
    no_args_is_help=True,
    add_completion=False,
    # A bug shows a plain traceback; never the locals (they hold credentials).
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", envvar="SWARM_URL", help="The gateway's base URL (default: http://127.0.0.1:8080)."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="SWARM_API_KEY", help="A tenant API key.", show_envvar=True),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option("--admin-token", envvar="SWARM_ADMIN_TOKEN", help="The operator's admin token."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="SWARM_CONFIG",
            help="TOML file with url, api_key, admin_token (default: ~/.config/swarm/config.toml).",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Flags win over SWARM_* environment variables, which win over the config file."""
    if ctx.resilient_parsing:
        return  # completion or --help: nothing to resolve
    ctx.obj = Settings.resolve(url, api_key, admin_token, config)


app.add_typer(admin.app, name="admin")
app.command("projects")(projects.list_projects)
app.add_typer(projects.app, name="project")
app.add_typer(tickets.app, name="tickets")
app.add_typer(dlq.app, name="dlq")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(events.app, name="events")
app.command("usage")(usage.usage)
app.command("trace")(trace.trace)
app.add_typer(agents.app, name="agents")
app.add_typer(templates.app, name="templates")
app.add_typer(snapshots.app, name="snapshots")
app.add_typer(marketplace.app, name="marketplace")
app.command("up")(up.up)
