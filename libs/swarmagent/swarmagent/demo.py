"""python -m swarmagent.demo: the local mesh on embedded SQLite, worked by agents.

Starts the ticketing service as its own process on a fresh SQLite database,
submits a demo project (a small DAG with coder -> reviewer stages and one
poison ticket), runs a few agents (claim, heartbeat, work, submit) until
every ticket is done or dead-lettered, and prints what happened.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmagent.client import ClaimedTicket, TicketingClient
from swarmagent.loop import AgentLoop, WorkFailed
from swarmcommon.localproc import start_service

console = Console()
TENANT = "demo-tenant"
POISON = "Migrate legacy billing schema"

CODER, REVIEWER = pb.AGENT_ROLE_CODER, pb.AGENT_ROLE_REVIEWER
PROJECT = [
    # key, name, priority, depends_on, stages
    ("design", "Design the API", 10, [], [CODER]),
    ("api", "Implement REST endpoints", 5, ["design"], [CODER, REVIEWER]),
    ("ui", "Build the settings page", 5, ["design"], [CODER, REVIEWER]),
    ("tests", "Add integration tests", 3, ["api"], [CODER]),
    ("release", "Write release notes", 1, ["api", "ui", "tests"], [CODER, REVIEWER]),
    ("legacy", POISON, 0, [], [CODER]),
]


def start_ticketing(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = open(workdir / "ticketing.log", "wb")  # noqa: SIM115 - handed to the child
    try:
        return start_service(
            "swarm_ticketing",
            "SWARM_TICKETING_",
            {
                "DATABASE_URL": f"sqlite:///{workdir / 'ticketing.db'}",
                "REAPER_INTERVAL_SECONDS": "1",
                "LOG_LEVEL": "WARNING",
            },
            output=log,
        )
    except RuntimeError as exc:
        raise SystemExit(f"ticketing did not start ({exc}); see {workdir / 'ticketing.log'}") from None


def work(claimed: ClaimedTicket) -> dict[str, Any]:
    time.sleep(random.uniform(0.2, 0.6))  # the LLM and git work of later issues
    if claimed.ticket.name == POISON:
        raise WorkFailed("Syntax error in spec", {"line": 12})
    slug = claimed.ticket.name.lower().replace(" ", "-")
    if claimed.stage == REVIEWER:
        return {"review": "approved", "branch": f"swarm/{slug}"}
    return {"branch": f"swarm/{slug}", "commit": f"{random.getrandbits(40):010x}"}


def main() -> None:
    workdir = Path("var/demo")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    console.rule("[bold]Swarm demo: ticketing on embedded SQLite")
    proc, target = start_ticketing(workdir)
    console.print(f"ticketing service listening on {target} (pid {proc.pid}, db {workdir / 'ticketing.db'})")
    admin = TicketingClient(target, TENANT, "demo-admin")
    try:
        created = admin.stub.CreateProject(
            pb.CreateProjectRequest(
                tenant_id=TENANT,
                name="webapp-redesign",
                description="A small DAG worked by coder and reviewer agents",
                request_id="demo-project-1",
                tickets=[
                    pb.TicketSpec(key=k, name=n, priority=p, depends_on=d, stages=s)  # type: ignore[arg-type]
                    for k, n, p, d, s in PROJECT
                ],
            )
        )
        console.print(f"created project [bold]{created.project.name}[/] with {len(created.tickets)} tickets")
        names = {t.id: t.name for t in created.tickets}
        run_agents(target, names)
        report(admin, created.project.id)
    finally:
        admin.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        console.print(f"ticketing stopped (exit {proc.returncode}); logs in {workdir / 'ticketing.log'}")


def run_agents(target: str, names: dict[str, str]) -> None:
    stop = threading.Event()
    lock = threading.Lock()

    def on_event(agent: str) -> Any:
        def emit(kind: str, claimed: ClaimedTicket, detail: str) -> None:
            colour = {"submitted": "green", "failed": "yellow", "quarantined": "red"}.get(kind, "white")
            with lock:
                console.print(f"  [{colour}]{agent:<10} {kind:<11}[/] {names[claimed.id]:<32} {detail}")

        return emit

    agents = [("coder-1", CODER), ("coder-2", CODER), ("coder-3", CODER), ("reviewer-1", REVIEWER)]
    loops = []
    for agent_id, role in agents:
        client = TicketingClient(target, TENANT, agent_id, lease=timedelta(seconds=10))
        loops.append(
            AgentLoop(
                client, work, role=role, heartbeat_interval=2, idle_wait=0.2, on_event=on_event(agent_id)
            )
        )
    threads = [threading.Thread(target=loop.run, args=(stop,)) for loop in loops]
    for t in threads:
        t.start()
    watcher = TicketingClient(target, TENANT, "watcher")
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            tickets = watcher.stub.ListTickets(pb.ListTicketsRequest(tenant_id=TENANT)).tickets
            if all(t.state in (pb.TICKET_STATE_DONE, pb.TICKET_STATE_QUARANTINED) for t in tickets):
                break
            time.sleep(0.3)
        else:
            console.print("[red]demo did not finish within 120 s")
    finally:
        stop.set()
        for t in threads:
            t.join()
        for loop in loops:
            loop.client.close()
        watcher.close()


def report(client: TicketingClient, project_id: str) -> None:
    tickets = client.stub.ListTickets(pb.ListTicketsRequest(tenant_id=TENANT, project_id=project_id)).tickets
    table = Table(title="Tickets")
    for col in ("ticket", "state", "stages", "failures", "result"):
        table.add_column(col)
    for t in tickets:
        table.add_row(
            t.name,
            pb.TicketState.Name(t.state).removeprefix("TICKET_STATE_").lower(),
            " -> ".join(pb.AgentRole.Name(s).removeprefix("AGENT_ROLE_").lower() for s in t.stages),
            str(t.failure_count),
            t.result_json,
        )
    console.print(table)
    dlq = client.stub.ListDeadLetters(pb.ListDeadLettersRequest(tenant_id=TENANT)).tickets
    console.print(f"[bold]Dead-letter queue: {len(dlq)} quarantined")
    for t in dlq:
        console.print(f"  {t.name}: {t.quarantine_reason}")
    project = client.stub.GetProject(pb.GetProjectRequest(tenant_id=TENANT, project_id=project_id)).project
    console.print(f"[bold]{project.done_count}/{project.ticket_count} tickets done, {len(dlq)} dead-lettered")


if __name__ == "__main__":
    main()
