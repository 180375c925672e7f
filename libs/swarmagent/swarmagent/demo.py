"""python -m swarmagent.demo: the local mesh on embedded SQLite, worked by agents.

Starts quota, telemetry, events, ticketing and the REST gateway as separate
processes, each on its own fresh SQLite database under var/demo/, every one
exporting its spans to telemetry over OTLP. Creates a real git repository
(var/demo/repos/webapp.git), a tenant and an API key, subscribes a local
webhook receiver to every event, and submits a project over REST: a small
DAG of coder -> reviewer tickets plus one poison ticket.

Agents work it: each claims a ticket, clones the repository, asks the LLM
(the real `anthropic` SDK, pointed at a local Messages-API server with
deterministic answers) through the tracked client, writes, commits and
pushes a branch; reviewers review the diff and merge it into main. At the
end it prints the tickets, the dead-letter queue, quota usage, the cost of
the LLM calls, one ticket's trace waterfall, main's history, and the
webhook deliveries (each verified with the standardwebhooks package).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import httpx
from rich.console import Console
from rich.table import Table
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from swarm.vmhost.v1 import vmhost_pb2 as vpb
from swarm.vmhost.v1 import vmhost_pb2_grpc as vpb_grpc
from swarmagent import demo_llm
from swarmagent.gitops import Author, init_repository
from swarmagent.messages_server import MessagesServer
from swarmcommon.grpcclient import channel
from swarmcommon.localproc import free_port, start_service
from swarmcommon.telemetry import setup_tracing, shutdown_tracing

console = Console()
TENANT = "acme"
POISON = demo_llm.POISON
MODEL = "claude-sonnet-4-6"
AUTHOR = Author("Swarm Agent", "agents@swarm.invalid")

PROJECT = {
    "name": "webapp-redesign",
    "description": "A small DAG worked by coder and reviewer agents",
    "tickets": [
        {"key": "design", "name": "Design the API", "priority": 10, "stages": ["coder", "reviewer"]},
        {
            "key": "api",
            "name": "Implement REST endpoints",
            "priority": 5,
            "depends_on": ["design"],
            "stages": ["coder", "reviewer"],
        },
        {
            "key": "ui",
            "name": "Build the settings page",
            "priority": 5,
            "depends_on": ["design"],
            "stages": ["coder", "reviewer"],
        },
        {
            "key": "tests",
            "name": "Add integration tests",
            "priority": 3,
            "depends_on": ["api"],
            "stages": ["coder", "reviewer"],
        },
        {
            "key": "release",
            "name": "Write release notes",
            "priority": 1,
            "depends_on": ["api", "ui", "tests"],
            "stages": ["coder", "reviewer"],
        },
        {"key": "legacy", "name": POISON, "stages": ["coder", "reviewer"]},
    ],
}


@contextmanager
def running(name: str, proc: subprocess.Popen[bytes], log: Path) -> Iterator[None]:
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        console.print(f"{name} stopped (exit {proc.returncode}); log {log}")


class WebhookReceiver:
    """A local integration endpoint: verifies every delivery like a customer would."""

    def __init__(self) -> None:
        self.secret = ""
        self.by_type: Counter[str] = Counter()
        self.event_ids: set[str] = set()
        self.rejected = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                try:
                    payload = Webhook(receiver.secret).verify(body, dict(self.headers.items()))
                    receiver.by_type[payload["event"]] += 1
                    receiver.event_ids.add(self.headers["webhook-id"])
                    self.send_response(204)
                except WebhookVerificationError:
                    receiver.rejected += 1
                    self.send_response(401)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/swarm-events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_gateway(
    workdir: Path, targets: dict[str, str], admin_token: str, log: IO[bytes]
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "SWARM_GATEWAY_PORT": str(port),
        **{f"SWARM_GATEWAY_{name.upper()}_TARGET": target for name, target in targets.items()},
        "SWARM_GATEWAY_ADMIN_TOKEN": admin_token,
        "SWARM_GATEWAY_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "swarm_gateway"], env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass  # not listening yet
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"gateway did not start; see {workdir / 'gateway.log'}")
        time.sleep(0.1)


def main() -> None:
    workdir = Path("var/demo")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    console.rule("[bold]Swarm demo: the local mesh on embedded SQLite")
    admin_token = secrets.token_urlsafe(24)
    repository = (workdir / "repos" / "webapp.git").resolve()
    init_repository(repository, {"README.md": "# webapp\n", "src/__init__.py": ""}, AUTHOR)
    console.print(f"git repository {repository} (branch main)")
    # Every process, this one included, sends its spans to telemetry.
    # Telemetry, ticketing and vmhost listen on every address: agents in
    # network namespaces reach them through the bridge address.
    telemetry = f"0.0.0.0:{free_port()}"
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{telemetry}"
    os.environ["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "500"
    os.environ["OTEL_RESOURCE_ATTRIBUTES"] = f"swarm.tenant_id={TENANT}"
    setup_tracing("swarm-agent")
    with ExitStack() as stack:
        stack.callback(shutdown_tracing)
        logs = {
            name: stack.enter_context(open(workdir / f"{name}.log", "wb"))
            for name in ("quota", "telemetry", "events", "ticketing", "gateway", "vmhost")
        }
        quota_proc, quota = start_service(
            "swarm_quota",
            "SWARM_QUOTA_",
            {"DATABASE_URL": f"sqlite:///{workdir / 'quota.db'}"},
            output=logs["quota"],
        )
        stack.enter_context(running("quota", quota_proc, workdir / "quota.log"))
        telemetry_proc, _ = start_service(
            "swarm_telemetry",
            "SWARM_TELEMETRY_",
            {
                "DATABASE_URL": f"sqlite:///{workdir / 'telemetry.db'}",
                "QUOTA_TARGET": quota,
                "LOG_LEVEL": "WARNING",
            },
            output=logs["telemetry"],
            target=telemetry,
        )
        stack.enter_context(running("telemetry", telemetry_proc, workdir / "telemetry.log"))
        events_proc, events = start_service(
            "swarm_events",
            "SWARM_EVENTS_",
            {
                "DATABASE_URL": f"sqlite:///{workdir / 'events.db'}",
                # The demo's receiver is on this machine; a real install allows
                # only public addresses (or its own on-prem ranges).
                "WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
                "LOG_LEVEL": "WARNING",
            },
            output=logs["events"],
        )
        stack.enter_context(running("events", events_proc, workdir / "events.log"))
        ticketing_proc, ticketing = start_service(
            "swarm_ticketing",
            "SWARM_TICKETING_",
            {
                "DATABASE_URL": f"sqlite:///{workdir / 'ticketing.db'}",
                "QUOTA_TARGET": quota,
                "EVENTS_TARGET": events,
                "REAPER_INTERVAL_SECONDS": "1",
                "LEASE_SECONDS": "60",
                "LOG_LEVEL": "WARNING",
            },
            output=logs["ticketing"],
            target=f"0.0.0.0:{free_port()}",
        )
        stack.enter_context(running("ticketing", ticketing_proc, workdir / "ticketing.log"))
        targets = {"ticketing": ticketing, "quota": quota, "events": events, "telemetry": telemetry}
        gateway_proc, base = start_gateway(workdir, targets, admin_token, logs["gateway"])
        stack.enter_context(running("gateway", gateway_proc, workdir / "gateway.log"))
        console.print(
            " · ".join(f"{k} {v}" for k, v in targets.items()) + f" · gateway {base} (docs {base}/docs)"
        )

        admin = stack.enter_context(
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30)
        )
        admin.post(
            "/admin/tenants", json={"id": TENANT, "display_name": "Acme Corp", "plan": "pro"}
        ).raise_for_status()
        key = admin.post(f"/admin/tenants/{TENANT}/api-keys", json={"display_name": "demo"}).json()["secret"]
        console.print(f"tenant [bold]{TENANT}[/] (pro plan) with API key {key[:12]}…")

        api = stack.enter_context(
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        )
        receiver = WebhookReceiver()
        stack.callback(receiver.close)
        hook = api.post("/api/webhooks", json={"url": receiver.url, "events": ["*"], "description": "demo"})
        hook.raise_for_status()
        receiver.secret = hook.json()["secret"]
        console.print(f"POST /api/webhooks → {hook.status_code}: every event to {receiver.url}")
        project_spec = {**PROJECT, "repository": str(repository), "base_branch": "main"}
        created = api.post("/api/projects", json=project_spec, headers={"Idempotency-Key": "demo-project-1"})
        created.raise_for_status()
        project = created.json()["project"]
        count = project["ticket_count"]
        console.print(
            f"POST /api/projects → {created.status_code}: [bold]{project['name']}[/] with {count} tickets"
        )
        names = {t["id"]: t["name"] for t in created.json()["tickets"]}
        llm_server = stack.enter_context(MessagesServer(demo_llm.respond, host="0.0.0.0"))
        llm_port = llm_server.base_url.rsplit(":", 1)[1]
        console.print(f"LLM: the anthropic SDK against a local Messages API on port {llm_port}")
        guest_env = {
            "SWARM_LLM_BASE_URL": f"http://{{host}}:{llm_port}",
            "SWARM_LLM_MODEL": MODEL,
            "OTEL_BSP_SCHEDULE_DELAY": "500",
        }
        vmhost_proc, vmhost = start_service(
            "swarm_vmhost",
            "SWARM_VMHOST_",
            {
                "DATABASE_URL": f"sqlite:///{workdir / 'vmhost.db'}",
                "WORKROOT": str((workdir / "vmhost").resolve()),
                "QUOTA_TARGET": quota,
                "TICKETING_TARGET": ticketing,
                "EVENTS_TARGET": events,
                "TELEMETRY_TARGET": telemetry,
                "GUEST_WORK": "swarmagent.runtime:work",
                "GUEST_ENV": ";".join(f"{k}={v}" for k, v in guest_env.items()),
                "HEARTBEAT_INTERVAL_SECONDS": "1",
                # A guest is failed after 10 s of silence: a busy laptop
                # should not see healthy agents replaced.
                "MISSED_HEARTBEATS": "10",
                "MONITOR_INTERVAL_SECONDS": "1",
                "LOG_LEVEL": "WARNING",
            },
            output=logs["vmhost"],
            target=f"0.0.0.0:{free_port()}",
        )
        stack.enter_context(running("vmhost", vmhost_proc, workdir / "vmhost.log"))
        run_guests(vmhost, api, names)
        report(api, project["id"])
        report_cost_and_trace(api, created.json()["tickets"], repository)
        report_webhooks(api, receiver, hook.json()["webhook"]["id"])


def run_guests(vmhost: str, api: httpx.Client, names: dict[str, str]) -> None:
    """Spawn agents through vmhost (the best driver this machine has), show
    the tickets' progress until none is left to do, then stop the agents."""
    ch = channel(vmhost)
    stub = vpb_grpc.VmHostServiceStub(ch)
    drivers = stub.ListDrivers(vpb.ListDriversRequest()).drivers
    console.print(
        "vmhost drivers: "
        + ", ".join(
            f"{vpb.Driver.Name(d.driver).removeprefix('DRIVER_').lower()}"
            f"{' (default)' if d.is_default else ''}{'' if d.available else ' — ' + d.reason}"
            for d in drivers
        ),
        highlight=False,
    )
    roles = [vpb.AGENT_ROLE_CODER] * 3 + [vpb.AGENT_ROLE_REVIEWER]
    agents = [
        stub.SpawnAgent(
            vpb.SpawnAgentRequest(tenant_id=TENANT, template="webapp-agent", role=r, request_id=f"demo-{i}")
        ).agent
        for i, r in enumerate(roles)
    ]
    for a in agents:
        console.print(
            f"  spawned {vpb.AgentRole.Name(a.role).removeprefix('AGENT_ROLE_').lower():<8} agent {a.id[:8]} "
            f"({vpb.Driver.Name(a.driver).removeprefix('DRIVER_').lower()}) at {a.address}",
            highlight=False,
        )
    seen: dict[str, tuple[str, int]] = {}
    deadline = time.monotonic() + 240
    redriven = False
    try:
        while time.monotonic() < deadline:
            tickets = api.get("/api/tickets").json()["items"]
            for t in tickets:
                now = (t["state"], t["stage_index"])
                if seen.get(t["id"]) != now:
                    seen[t["id"]] = now
                    stage = t["stages"][min(t["stage_index"], len(t["stages"]) - 1)]
                    colour = {"done": "green", "quarantined": "red", "in_progress": "cyan"}.get(
                        t["state"], "white"
                    )
                    who = f" by {t['lease']['agent_id'][:8]}" if t.get("lease") else ""
                    line = f"  [{colour}]{t['state']:<11}[/] {names[t['id']]:<32} {stage}{who}"
                    console.print(line)
            states = {t["state"] for t in tickets}
            if states <= {"done", "quarantined"} and "quarantined" in states and not redriven:
                redriven = redrive_dead_letters(api)
            elif states <= {"done"}:
                break
            time.sleep(0.3)
        else:
            console.print("[red]demo did not finish within 240 s")
        live = stub.ListAgents(vpb.ListAgentsRequest(tenant_id=TENANT)).agents
        console.print(f"[bold]ListAgents:[/] {len(live)} agents alive; terminating them")
    finally:
        for a in agents:
            stub.TerminateAgent(
                vpb.TerminateAgentRequest(tenant_id=TENANT, agent_id=a.id, reason="demo finished")
            )
        ch.close()


def redrive_dead_letters(api: httpx.Client) -> bool:
    """What an operator does: read why tickets were dead-lettered, fix the
    cause (here: the spec the model choked on), redrive them."""
    dlq = api.get("/api/dead-letters").json()["items"]
    console.print(f"[bold]GET /api/dead-letters: {len(dlq)} quarantined")
    for t in dlq:
        console.print(f"  {t['name']}: {t['quarantine_reason']}")
    demo_llm.fix_spec()
    r = api.post(
        "/api/dead-letters/redrive",
        json={"ticket_ids": [t["id"] for t in dlq], "reason": "spec fixed (line 12)"},
    )
    r.raise_for_status()
    console.print(
        f"[bold]POST /api/dead-letters/redrive → {r.status_code}:[/] spec fixed, {len(dlq)} redriven"
    )
    return True


def report(api: httpx.Client, project_id: str) -> None:
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


def report_cost_and_trace(api: httpx.Client, tickets: list[dict[str, Any]], repository: Path) -> None:
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
    api_ticket = next(t for t in tickets if t["name"] == "Implement REST endpoints")
    deadline = time.monotonic() + 20
    while True:  # spans arrive in batches, a moment after the work
        r = api.get(f"/api/tickets/{api_ticket['id']}/trace", params={"format": "text"})
        if r.status_code == 200 and "git.merge" in r.text or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    console.print(f"[bold]GET /api/tickets/{api_ticket['id']}/trace?format=text")
    console.print(r.text, markup=False, highlight=False, soft_wrap=True)
    mrs = api.get("/api/merge-requests").json()["items"]
    states = Counter(m["state"] for m in mrs)
    console.print(f"[bold]GET /api/merge-requests:[/] {dict(states)}")
    for m in mrs:
        console.print(
            f"  {m['state']:<8} {m['branch']:<48} {(m['merge_commit'] or '')[:10]}", highlight=False
        )
    log = subprocess.run(
        ["git", "-C", str(repository), "log", "--oneline", "--first-parent", "main"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    files = subprocess.run(
        ["git", "-C", str(repository), "ls-tree", "-r", "--name-only", "main"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    console.print(f"[bold]main[/] of {repository}:", markup=True)
    console.print(log.rstrip(), markup=False, highlight=False)
    console.print(f"  files on main: {', '.join(files)}", markup=False, highlight=False)


def report_webhooks(api: httpx.Client, receiver: WebhookReceiver, hook_id: str) -> None:
    """Every stored event reaches the receiver (at least once), signed."""
    stored: set[str] = set()
    token = ""
    while True:
        page = api.get("/api/events", params={"page_size": 1000, "page_token": token}).json()
        stored |= {e["id"] for e in page["items"]}
        token = page["next_page_token"]
        if not token:
            break
    deadline = time.monotonic() + 30
    while not stored <= receiver.event_ids and time.monotonic() < deadline:
        time.sleep(0.2)
    attempts = api.get(f"/api/webhooks/{hook_id}/logs", params={"page_size": 1000}).json()["items"]
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(receiver.by_type.items()))
    console.print(
        f"[bold]Webhook receiver:[/] {len(receiver.event_ids)}/{len(stored)} events delivered and verified "
        f"(standardwebhooks), {receiver.rejected} rejected; {len(attempts)} attempts logged"
    )
    console.print(f"  {kinds}")


if __name__ == "__main__":
    main()
