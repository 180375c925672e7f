"""How answers are shown: Rich tables for people, the gateway's JSON with
--json for scripts, and small formatters shared by every command."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the gateway's JSON instead of a table.")]
Limit = Annotated[int, typer.Option("--limit", min=0, help="At most this many items (0: all).")]

# A pipe or a test runner has no width: wide enough that ids are never cut.
PIPE_WIDTH = 200


def console(stderr: bool = False) -> Console:
    """A console on the current stdout/stderr (tests swap them per call)."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    return Console(file=stream, width=None if terminal else PIPE_WIDTH, highlight=False, soft_wrap=False)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def say(message: str) -> None:
    console().print(message)


# A column: (header, how to get the cell from an item).
Column = tuple[str, Callable[[dict[str, Any]], Any]]


def field(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda item: item.get(name)


def table(title: str, columns: Sequence[Column], items: Iterable[dict[str, Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for header, _ in columns:
        t.add_column(header, overflow="fold")
    for item in items:
        t.add_row(*(cell(get(item)) for _, get in columns))
    return t


def show_page(
    data: dict[str, Any], as_json: bool, title: str, columns: Sequence[Column], empty: str = "nothing"
) -> None:
    """A listing: JSON as the gateway sent it, or a table (or one line when empty)."""
    if as_json:
        print_json(data)
        return
    items = data.get("items", [])
    if not items:
        say(f"{title}: {empty}")
        return
    out = console()
    out.print(table(f"{title} ({len(items)})", columns, items))
    if data.get("next_page_token"):
        out.print("(more: raise --limit, or --limit 0 for all)")


def show_object(data: dict[str, Any], as_json: bool, title: str, fields: Sequence[str] = ()) -> None:
    """One object as a two-column table of its fields (all of them by default)."""
    if as_json:
        print_json(data)
        return
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    for key in fields or list(data):
        t.add_row(key, cell(data.get(key)))
    console().print(t)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return json.dumps(value) if value else "-"
    return escape(str(value))


def usd(micros: int | None) -> str:
    if micros is None:
        return "-"
    return f"${micros / 1_000_000:,.4f}"


def when(stamp: str | None) -> str:
    """An ISO timestamp as local-free UTC 'YYYY-MM-DD HH:MM:SS'."""
    if not stamp:
        return "-"
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def minutes(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 60:.0f}s"
    if value < 120:
        return f"{value:.1f} min"
    return f"{value / 60:.1f} h"
