"""What the demo shows at the end, all read back over the REST API (and git):
tickets, dead letters, quota, LLM cost, one ticket's trace, merge requests,
main's history, webhook deliveries."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from swarmdemo.console import console, poll
from swarmdemo.receiver import WebhookReceiver

TRACED_TICKET = "Implement REST endpoints"


def report_tickets(api: httpx.Client, project_id: str) -> None:
    tickets = api.get("/api/tickets", params={"project_id": project_id}).json()["items"]
    table = Table(title="GET /api/tickets")
    for col in ("ticket", "state", "stages", "failures", "result"):
        table.add_column(col)
    for t in tickets:
        result = t["result"] or {}
        outcome = (
            f"{result['branch']} merged as {result['merge_commit'][:10]}"
            if result.get("merge_commit")
            else result.get("summary", "")
        )
        table.add_row(t["name"], t["state"], " -> ".join(t["stages"]), str(t["failure_count"]), outcome)
    console.print(table)
    dlq = api.get("/api/dead-letters").json()["items"]
    usage = api.get("/api/quota/usage").json()
    console.print(f"[bold]GET /api/quota/usage[/] ({usage['plan']} plan):")
    for u in usage["resources"]:
        limit = "unlimited" if u["limit"] is None else u["limit"]
        console.print(f"  {u['resource']:<20} {u['used']}/{limit}")
    project = api.get(f"/api/projects/{project_id}").json()
    console.print(
        f"[bold]{project['done_count']}/{project['ticket_count']} tickets done, {len(dlq)} dead-lettered"
    )
    p = api.get(f"/api/projects/{project_id}/progress").json()
    console.print(
        f"[bold]GET /api/projects/…/progress:[/] {p['percent_complete']} % complete, "
        f"ETA {p['eta_minutes']} min; {p['inside_range']} of {p['estimated_done']} "
        "tickets finished inside their estimate's range"
    )


def report_ensemble(api: httpx.Client, tickets: list[dict[str, Any]]) -> None:
    """The ensemble's attempts and the judge's choice, from its audit trail."""
    for ticket in tickets:
        if ticket["pattern"] != "ensemble" or ticket["ensemble_ticket_id"]:
            continue
        attempts = [t for t in tickets if t["ensemble_ticket_id"] == ticket["id"]]
        events = api.get(f"/api/tickets/{ticket['id']}/events").json()["items"]
        for e in events:
            if e["event_type"] == "judged":
                console.print(
                    f"[bold]ensemble[/] {ticket['name']}: {len(attempts)} coder attempts, the judge chose "
                    f"attempt {e['new_value']['attempt']}: {e['rationale']}"
                )


def report_cost(api: httpx.Client) -> None:
    usage = api.get("/api/usage", params={"group_by": "agent_type"}).json()
    console.print(
        f"[bold]GET /api/usage[/] Cost this month: ${usage['total']['cost_usd']:.4f} for "
        f"{usage['total']['request_count']} LLM calls"
    )
    for row in usage["rows"]:
        t = row["totals"]
        console.print(
            f"  {row['key']:<10} ${t['cost_usd']:.4f} ({row['share_of_cost']:.0%})  "
            f"{t['input_tokens']} in, {t['output_tokens']} out, "
            f"{t['cache_creation_input_tokens']} cache write, {t['cache_read_input_tokens']} cache read"
        )


def report_trace(api: httpx.Client, tickets: list[dict[str, Any]]) -> None:
    ticket = next(t for t in tickets if t["name"] == TRACED_TICKET)
    path = f"/api/tickets/{ticket['id']}/trace"

    def merged() -> httpx.Response | None:  # spans arrive in batches, a moment after the work
        r = api.get(path, params={"format": "text"})
        return r if r.status_code == 200 and "git.merge" in r.text else None

    r = poll(merged, timeout=20, interval=0.5) or api.get(path, params={"format": "text"})
    console.print(f"[bold]GET {path}?format=text")
    console.print(r.text, markup=False, highlight=False, soft_wrap=True)


def report_merges(api: httpx.Client, repository: Path) -> None:
    mrs = api.get("/api/merge-requests").json()["items"]
    states = Counter(m["state"] for m in mrs)
    console.print(f"[bold]GET /api/merge-requests:[/] {dict(states)}")
    for m in mrs:
        console.print(
            f"  {m['state']:<8} {m['branch']:<48} {(m['merge_commit'] or '')[:10]}", highlight=False
        )
    log = _git(repository, "log", "--oneline", "--first-parent", "main")
    files = _git(repository, "ls-tree", "-r", "--name-only", "main").split()
    console.print(f"[bold]main[/] of {repository}:", markup=True)
    console.print(log.rstrip(), markup=False, highlight=False)
    console.print(f"  files on main: {', '.join(files)}", markup=False, highlight=False)


def _git(repository: Path, *args: str) -> str:
    # The repository belongs to the guests' uid; reading it as this user is fine.
    safe = f"safe.directory={repository}"
    done = subprocess.run(
        ["git", "-c", safe, "-C", str(repository), *args], capture_output=True, text=True, check=False
    )
    return done.stdout


def _stored_event_ids(api: httpx.Client) -> set[str]:
    stored: set[str] = set()
    token = ""
    while True:
        page = api.get("/api/events", params={"page_size": 1000, "page_token": token}).json()
        stored |= {e["id"] for e in page["items"]}
        token = page["next_page_token"]
        if not token:
            return stored


def _settled_event_ids(api: httpx.Client, quiet: float = 1.5, timeout: float = 30.0) -> set[str]:
    """The stored events once the outbox relays have caught up: the last
    transitions of the run are still on their way when the work ends."""
    stored = _stored_event_ids(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = _stored_event_ids(api)
        if now == stored:
            break
        stored = now
    return stored


def report_webhooks(api: httpx.Client, receiver: WebhookReceiver, hook_id: str) -> None:
    """Every stored event reaches the receiver (at least once), signed."""
    stored = _settled_event_ids(api)
    poll(lambda: stored <= receiver.event_ids, timeout=30)
    attempts = api.get(f"/api/webhooks/{hook_id}/logs", params={"page_size": 1000}).json()["items"]
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(receiver.by_type.items()))
    console.print(
        f"[bold]Webhook receiver:[/] {len(receiver.event_ids)}/{len(stored)} events delivered and verified "
        f"(standardwebhooks), {receiver.rejected} rejected; {len(attempts)} attempts logged"
    )
    console.print(f"  {kinds}")
