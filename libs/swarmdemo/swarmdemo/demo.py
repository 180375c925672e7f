"""python -m swarmdemo: the local mesh on embedded SQLite, worked by agents.

Starts quota, telemetry, events, ticketing and the REST gateway as separate
processes, each on its own fresh SQLite database under var/demo/, every one
exporting its spans to telemetry over OTLP. Creates a real git repository
(var/demo/repos/webapp.git), a tenant and an API key, subscribes a local
webhook receiver to every event, and submits a project over REST: a small
DAG of coder -> reviewer tickets, one poison ticket, and one ensemble ticket
(three coder attempts -> a judge that chooses one and says why -> reviewer).

vmhost spawns agents that work it: each claims a ticket, clones the
repository, asks the LLM through the tracked client, writes, commits and
pushes a branch; reviewers review the diff and merge it into main. The LLM
is the real `anthropic` SDK in each guest, pointed by configuration alone
(SWARM_LLM_BASE_URL) at a local Messages-API server answering with this
demo's deterministic model. At the end it prints the tickets, the
dead-letter queue, quota usage, the cost of the LLM calls, one ticket's
trace waterfall, main's history, and the webhook deliveries (each verified
with the standardwebhooks package).
"""

from __future__ import annotations

import os
import secrets
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from swarm_vmhost.sandbox import GUEST_GID, GUEST_UID
from swarmagent.gitops import Author, init_repository
from swarmcommon.localproc import free_port
from swarmcommon.telemetry import setup_tracing, shutdown_tracing
from swarmdemo.agents import run_agents
from swarmdemo.canary import CanaryWatch, set_up_canary, submit_batch
from swarmdemo.console import console
from swarmdemo.mesh import Mesh, MeshPki, report_security, repository_root, start_mesh, start_vmhost
from swarmdemo.messages_server import MessagesServer
from swarmdemo.model import BROKEN_SPEC, POISON, DemoModel
from swarmdemo.receiver import WebhookReceiver
from swarmdemo.report import (
    report_cost,
    report_ensemble,
    report_merges,
    report_tickets,
    report_trace,
    report_webhooks,
)

WORKDIR = Path("var/demo")
TENANT = "acme"
MODEL = "claude-sonnet-4-6"
AUTHOR = Author("Swarm Agent", "agents@swarm.invalid")


def _ticket(key: str, name: str, priority: int = 0, depends_on: tuple[str, ...] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"key": key, "name": name, "stages": ["coder", "reviewer"]}
    if priority:
        spec["priority"] = priority
    if depends_on:
        spec["depends_on"] = list(depends_on)
    return spec


PROJECT = {
    "name": "webapp-redesign",
    "description": "A small DAG worked by coder and reviewer agents",
    "tickets": [
        {**_ticket("design", "Design the API", 10), "type": "design"},  # its end: project.design_complete
        _ticket("api", "Implement REST endpoints", 5, ("design",)),
        _ticket("ui", "Build the settings page", 5, ("design",)),
        _ticket("tests", "Add integration tests", 3, ("api",)),
        _ticket("release", "Write release notes", 1, ("api", "ui", "tests")),
        {**_ticket("legacy", POISON), "description": BROKEN_SPEC},
        # Three coders in parallel, a judge chooses one with a rationale, a reviewer merges it.
        {"key": "search", "name": "Add a search helper", "pattern": "ensemble", "priority": 4},
    ],
}


def _trace_everything(pki: MeshPki) -> str:
    """Every process, this one and the services it starts, sends its spans
    to telemetry over mutual TLS with its own certificate; returns the
    address telemetry is to listen on."""
    port = free_port()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"https://127.0.0.1:{port}"
    os.environ.pop("OTEL_EXPORTER_OTLP_INSECURE", None)
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "500"
    os.environ["OTEL_RESOURCE_ATTRIBUTES"] = f"swarm.tenant_id={TENANT}"
    setup_tracing("swarm-demo", pki.operator)
    return f"127.0.0.1:{port}"


def _tenant_api(stack: ExitStack, mesh: Mesh, admin_token: str) -> httpx.Client:
    """A tenant on the pro plan and a client holding its new API key."""
    admin = stack.enter_context(
        httpx.Client(base_url=mesh.gateway, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30)
    )
    admin.post(
        "/admin/tenants", json={"id": TENANT, "display_name": "Acme Corp", "plan": "pro"}
    ).raise_for_status()
    key = admin.post(f"/admin/tenants/{TENANT}/api-keys", json={"display_name": "demo"}).json()["secret"]
    console.print(f"tenant [bold]{TENANT}[/] (pro plan) with API key {key[:12]}…")
    return stack.enter_context(
        httpx.Client(base_url=mesh.gateway, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    )


def _subscribe(stack: ExitStack, api: httpx.Client) -> tuple[WebhookReceiver, str]:
    receiver = WebhookReceiver()
    stack.callback(receiver.close)
    hook = api.post("/api/webhooks", json={"url": receiver.url, "events": ["*"], "description": "demo"})
    hook.raise_for_status()
    receiver.secret = hook.json()["secret"]
    console.print(f"POST /api/webhooks → {hook.status_code}: every event to {receiver.url}")
    return receiver, str(hook.json()["webhook"]["id"])


def _submit(api: httpx.Client, repository: Path) -> dict[str, Any]:
    spec = {**PROJECT, "repository": str(repository), "base_branch": "main"}
    created = api.post("/api/projects", json=spec, headers={"Idempotency-Key": "demo-project-1"})
    created.raise_for_status()
    body: dict[str, Any] = created.json()
    project = body["project"]
    console.print(
        f"POST /api/projects → {created.status_code}: [bold]{project['name']}[/] "
        f"with {project['ticket_count']} tickets"
    )
    return body


def _serve_model(stack: ExitStack, model: DemoModel) -> str:
    """The model's Messages API, which only telemetry's LLM proxy calls."""
    server = stack.enter_context(MessagesServer(model))
    port = server.base_url.rsplit(":", 1)[1]
    console.print(
        f"LLM: agents' anthropic SDK → telemetry's LLM proxy (their token as API key) → "
        f"a local Messages API on port {port}"
    )
    return str(server.base_url)


GUEST_ENV = {"SWARM_LLM_MODEL": MODEL, "OTEL_BSP_SCHEDULE_DELAY": "500"}


def _give_to_guests(tenant_root: Path) -> None:
    """Sandboxed agents run as an unprivileged uid of their own
    (swarm_vmhost.sandbox.GUEST_UID), not as the user running the demo: the
    tenant's repositories become theirs, so they can push to them."""
    if os.geteuid() != 0:
        return  # without root, guests run as this user (process driver)
    for path in [tenant_root, *tenant_root.rglob("*")]:
        os.chown(path, GUEST_UID, GUEST_GID, follow_symlinks=False)


def main() -> None:
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    console.rule("[bold]Swarm demo: the local mesh on embedded SQLite")
    admin_token = secrets.token_urlsafe(24)
    repository = repository_root(WORKDIR) / TENANT / "webapp.git"
    init_repository(repository, {"README.md": "# webapp\n", "src/__init__.py": ""}, AUTHOR)
    _give_to_guests(repository.parent)
    console.print(f"git repository {repository} (branch main)")
    pki = MeshPki.create(WORKDIR / "pki")
    telemetry = _trace_everything(pki)
    with ExitStack() as stack:
        stack.callback(shutdown_tracing)
        model = DemoModel()
        mesh = start_mesh(stack, WORKDIR, pki, admin_token, telemetry, _serve_model(stack, model))
        console.print(
            " · ".join(f"{k} {v}" for k, v in mesh.targets.items())
            + f" · gateway {mesh.gateway} (docs {mesh.gateway}/docs)"
        )
        api = _tenant_api(stack, mesh, admin_token)
        receiver, hook_id = _subscribe(stack, api)
        canary = set_up_canary(api)
        created = _submit(api, repository)
        submit_batch(api, repository)
        vmhost = start_vmhost(stack, WORKDIR, mesh, GUEST_ENV)
        report_security(mesh)
        names = {t["id"]: t["name"] for t in created["tickets"]}
        run_agents(vmhost, pki.operator, TENANT, api, names, CanaryWatch(api, canary))
        report_tickets(api, created["project"]["id"])
        report_ensemble(api, created["tickets"])
        report_cost(api)
        report_trace(api, created["tickets"])
        report_merges(api, repository)
        report_webhooks(api, receiver, hook_id)


if __name__ == "__main__":
    main()
