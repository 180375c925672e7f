"""Following a project until every ticket is finished: a live Rich display
on a terminal (tickets per stage and state, a bar, the ETA), one line per
change elsewhere (a pipe, a log, a test), then a summary table."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from swarmcli.client import Api, fail
from swarmcli.output import console, minutes, table, when

FINISHED = ("done", "cancelled", "quarantined")
STATES = ("blocked", "ready", "assigned", "in_progress", "quarantined", "cancelled")


def stage_of(ticket: dict[str, Any]) -> str:
    """The stage a ticket is at (a done ticket has passed them all)."""
    if ticket["state"] == "done" or not ticket["stages"]:
        return "done"
    return str(ticket["stages"][min(ticket["stage_index"], len(ticket["stages"]) - 1)])


def by_stage(tickets: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    rows: dict[str, Counter[str]] = {}
    for t in tickets:
        rows.setdefault(stage_of(t), Counter())[t["state"]] += 1
    # Stages in pipeline order as the tickets list them, "done" last.
    order = [s for t in tickets for s in t["stages"]]
    return dict(sorted(rows.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def eta_line(progress: dict[str, Any]) -> str:
    return (
        f"{progress['percent_complete']:.0f}% complete · ETA {when(progress['eta'])} "
        f"(in {minutes(progress['eta_minutes'])}) · {progress['working_agents']} agents working"
    )


def status_line(tickets: list[dict[str, Any]], progress: dict[str, Any]) -> str:
    finished = sum(t["state"] in FINISHED for t in tickets)
    parts = [f"{finished}/{len(tickets)} finished"]
    for stage, states in by_stage(tickets).items():
        parts.append(f"{stage}: " + ", ".join(f"{s} {n}" for s, n in sorted(states.items())))
    return " · ".join(parts) + " · " + eta_line(progress)


def live_view(project_id: str, tickets: list[dict[str, Any]], progress: dict[str, Any]) -> Group:
    bar = Progress(TextColumn("[bold]tickets finished"), BarColumn(), MofNCompleteColumn())
    bar.add_task("", total=len(tickets), completed=sum(t["state"] in FINISHED for t in tickets))
    grid = Table(title=f"project {project_id}", title_justify="left", header_style="bold")
    grid.add_column("stage")
    for state in (*STATES, "done"):
        grid.add_column(state, justify="right")
    for stage, states in by_stage(tickets).items():
        grid.add_row(stage, *(str(states.get(s, "")) for s in (*STATES, "done")))
    return Group(bar, grid, eta_line(progress))


def summary(tickets: list[dict[str, Any]]) -> Table:
    counts = Counter(t["state"] for t in tickets)
    title = "summary: " + ", ".join(f"{n} {s}" for s, n in counts.most_common())
    return table(
        title,
        [
            ("ticket", lambda t: t["id"]),
            ("name", lambda t: t["name"]),
            ("state", lambda t: t["state"]),
            ("stages", lambda t: " → ".join(t["stages"])),
            ("failures", lambda t: t["failure_count"]),
            ("took", lambda t: minutes(t["actual_minutes"])),
            ("why", lambda t: t["quarantine_reason"] or t["last_failure_reason"]),
        ],
        tickets,
    )


def wait_for_project(
    api: Api, project_id: str, interval: float, timeout: float, quiet: bool = False
) -> list[dict[str, Any]]:
    """Poll until every ticket is done, cancelled or quarantined; returns them."""
    out = console()
    deadline = time.monotonic() + timeout if timeout else None

    def snapshot() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        tickets = api.pages("/api/tickets", 0, project_id=project_id)["items"]
        return tickets, api.get(f"/api/projects/{project_id}/progress")

    def finished(tickets: list[dict[str, Any]]) -> bool:
        return all(t["state"] in FINISHED for t in tickets)

    def expired() -> bool:
        return deadline is not None and time.monotonic() > deadline

    tickets, progress = snapshot()
    if out.is_terminal and not quiet:
        with Live(live_view(project_id, tickets, progress), console=out, refresh_per_second=4) as live:
            while not finished(tickets) and not expired():
                time.sleep(interval)
                tickets, progress = snapshot()
                live.update(live_view(project_id, tickets, progress))
    else:
        last = ""
        while True:
            line = status_line(tickets, progress)
            # The ETA moves every poll: a new line only when the tickets moved.
            key = line.rsplit(" · ", 1)[0]
            if key != last and not quiet:
                out.print(f"[{time.strftime('%H:%M:%S')}] {line}", markup=False)
                last = key
            if finished(tickets) or expired():
                break
            time.sleep(interval)
            tickets, progress = snapshot()
    if not finished(tickets):
        left = sum(t["state"] not in FINISHED for t in tickets)
        raise fail(f"gave up waiting after {timeout:g}s: {left} tickets of project {project_id} unfinished")
    if not quiet:
        out.print(summary(tickets))
    return tickets
