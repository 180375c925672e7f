"""`swarm marketplace search/show/install/review/publish`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from swarmcli.commands.projects import read_spec
from swarmcli.context import tenant_api
from swarmcli.output import JsonFlag, Limit, field, print_json, say, show_object, show_page, usd

app = typer.Typer(
    help="The template marketplace: find, install and review agent templates.", no_args_is_help=True
)

Slug = Annotated[str, typer.Argument(help="The listing's slug.")]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
COLUMNS = [
    ("slug", field("slug")),
    ("name", field("name")),
    ("agent type", field("agent_type")),
    ("category", field("category")),
    (
        "price",
        lambda x: (
            "free" if x["pricing_model"] == "free" else f"{usd(x['price_usd_micros'])} {x['pricing_model']}"
        ),
    ),
    ("rating", lambda x: f"{x['rating_average']:.1f} ({x['rating_count']})" if x["rating_count"] else "-"),
    ("installs", field("install_count")),
    ("tags", field("tags")),
]


@app.command("search")
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Words in the name or description.")] = "",
    category: Annotated[str | None, typer.Option("--category", help="security, testing, review, ...")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Only listings with this tag.")] = None,
    sort: Annotated[
        str | None, typer.Option("--sort", help="rating (default), installs, newest, ...")
    ] = None,
    limit: Limit = 50,
    as_json: JsonFlag = False,
) -> None:
    """Search the listings this tenant can see."""
    with tenant_api(ctx) as api:
        page = api.pages("/api/marketplace/templates", limit, q=query, category=category, tag=tag, sort=sort)
    show_page(page, as_json, "marketplace", COLUMNS, empty="no listing matches")


@app.command("show")
def show(ctx: typer.Context, slug: Slug, as_json: JsonFlag = False) -> None:
    """A listing, this tenant's installation of it, and its prompt when visible."""
    with tenant_api(ctx) as api:
        detail = api.get(f"/api/marketplace/templates/{slug}")
    if as_json:
        print_json(detail)
        return
    show_object(detail["listing"], False, f"listing {slug}")
    installed = detail["installation"]
    say(f"installed: version {installed['version']} ({installed['id']})" if installed else "not installed")
    if detail["prompt"] is not None:
        say(f"prompt ({detail['model'] or 'default model'}):")
        typer.echo(detail["prompt"])


@app.command("install")
def install(
    ctx: typer.Context,
    slug: Slug,
    config: Annotated[
        str, typer.Option("--config", help="The installation's settings as a JSON object.")
    ] = "{}",
    as_json: JsonFlag = False,
) -> None:
    """Install a listing for this tenant (a paid one is charged)."""
    try:
        settings = json.loads(config)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--config") from None
    if not isinstance(settings, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--config")
    with tenant_api(ctx) as api:
        created = api.post(f"/api/marketplace/templates/{slug}/install", {"config": settings})
    if as_json:
        print_json(created)
        return
    inst, charge = created["installation"], created["charge"]
    say(
        f"installed {inst['slug']} version {inst['version']} ({inst['id']})"
        + (f"; charged {usd(charge['price_usd_micros'])}" if charge else "")
    )


@app.command("review")
def review(
    ctx: typer.Context,
    listing: Annotated[str, typer.Argument(help="The listing's slug or id.")],
    rating: Annotated[int, typer.Option("--rating", min=1, max=5, help="1 to 5 stars.")],
    title: Annotated[str, typer.Option("--title")] = "",
    body: Annotated[str, typer.Option("--body")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Rate a listing you installed."""
    with tenant_api(ctx) as api:
        listing_id = listing
        if not UUID.match(listing):
            listing_id = api.get(f"/api/marketplace/templates/{listing}")["listing"]["id"]
        created = api.post(
            f"/api/marketplace/templates/{listing_id}/reviews",
            {"rating": rating, "title": title, "body": body},
        )
    if as_json:
        print_json(created)
        return
    after = created["listing"]
    average, count = after["rating_average"], after["rating_count"]
    say(f"reviewed {after['slug']}: {rating}/5; now {average:.1f} from {count} reviews")


@app.command("publish")
def publish(
    ctx: typer.Context,
    spec_file: Annotated[
        Path, typer.Option("-f", "--file", help="The listing (YAML): the body of the POST.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Publish a listing (slug, name, agent_type, category, prompt, pricing...)."""
    spec: dict[str, Any] = read_spec(spec_file)
    with tenant_api(ctx) as api:
        listing = api.post("/api/marketplace/templates", spec)
    if as_json:
        print_json(listing)
        return
    say(f"published {listing['slug']} version {listing['version']} ({listing['visibility']})")
