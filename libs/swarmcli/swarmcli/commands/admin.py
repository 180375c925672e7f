"""`swarm admin`: tenants and their API keys, with the operator's admin token."""

from __future__ import annotations

from typing import Annotated

import typer

from swarmcli.context import admin_api
from swarmcli.output import JsonFlag, Limit, field, print_json, say, show_object, show_page, when

app = typer.Typer(help="Operator commands (need the admin token).", no_args_is_help=True)
tenants = typer.Typer(help="Tenants: create and list.", no_args_is_help=True)
keys = typer.Typer(help="A tenant's API keys.", no_args_is_help=True)
app.add_typer(tenants, name="tenants")
app.add_typer(keys, name="keys")

Plan = Annotated[str | None, typer.Option("--plan", help="free, pro or enterprise.")]


@tenants.command("create")
def create_tenant(
    ctx: typer.Context,
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id, e.g. acme.")],
    plan: Plan = "free",
    display_name: Annotated[str, typer.Option("--display-name", help="A human name.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Create a tenant on a plan."""
    body = {"id": tenant_id, "plan": plan, "display_name": display_name or tenant_id}
    with admin_api(ctx) as api:
        created = api.post("/admin/tenants", body)
    if as_json:
        print_json(created)
        return
    say(f"tenant [bold]{created['id']}[/] created on the {created['plan']} plan")
    show_object(created["limits"], False, "limits")


@tenants.command("ls")
def list_tenants(
    ctx: typer.Context, plan: Plan = None, limit: Limit = 100, as_json: JsonFlag = False
) -> None:
    """List tenants."""
    with admin_api(ctx) as api:
        page = api.pages("/admin/tenants", limit, plan=plan)
    show_page(
        page,
        as_json,
        "tenants",
        [
            ("id", field("id")),
            ("name", field("display_name")),
            ("plan", field("plan")),
            ("created", lambda t: when(t["created_at"])),
        ],
    )


@keys.command("create")
def create_key(
    ctx: typer.Context,
    tenant_id: Annotated[str, typer.Argument(help="The tenant the key acts as.")],
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "cli",
    as_json: JsonFlag = False,
) -> None:
    """Create an API key; its secret is shown only this once."""
    with admin_api(ctx) as api:
        created = api.post(f"/admin/tenants/{tenant_id}/api-keys", {"display_name": name})
    if as_json:
        print_json(created)
        return
    say(f"API key {created['api_key']['id']} for tenant {tenant_id} (shown once):")
    typer.echo(created["secret"])


@keys.command("ls")
def list_keys(
    ctx: typer.Context,
    tenant_id: Annotated[str, typer.Argument(help="The tenant.")],
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
    limit: Limit = 100,
    as_json: JsonFlag = False,
) -> None:
    """List a tenant's API keys (never their secrets)."""
    with admin_api(ctx) as api:
        page = api.pages(f"/admin/tenants/{tenant_id}/api-keys", limit, show_revoked=revoked or None)
    show_page(
        page,
        as_json,
        f"API keys of {tenant_id}",
        [
            ("id", field("id")),
            ("name", field("display_name")),
            ("prefix", field("prefix")),
            ("created", lambda k: when(k["created_at"])),
            ("last used", lambda k: when(k["last_used_at"])),
            ("revoked", lambda k: when(k["revoked_at"])),
        ],
    )
