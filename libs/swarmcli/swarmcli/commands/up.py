"""`swarm up`: the local mesh in the foreground, as `make demo` starts it
(swarmdemo.mesh) but without the demo's project: quota, telemetry, events,
ticketing, the gateway and vmhost, each its own process on a fresh SQLite
database under --workdir, all on mutual TLS. Ctrl-C stops them all."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import threading
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from swarm_vmhost.sandbox import GUEST_GID, GUEST_UID
from swarmcli.client import Api, usage_error
from swarmcli.output import say
from swarmcommon.localproc import free_port
from swarmdemo.mesh import Mesh, MeshPki, repository_root, start_mesh, start_vmhost
from swarmdemo.messages_server import MessagesServer
from swarmdemo.model import DemoModel

# Marks a directory `swarm up` made, so a rerun may wipe it and nothing else.
MARKER = ".swarm-up"
MODEL = "claude-sonnet-4-6"


def fresh_workdir(workdir: Path) -> None:
    """Every run starts on fresh databases and a fresh CA."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise usage_error(
                f"{workdir} is not empty and not a `swarm up` directory; choose another --workdir"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by `swarm up`; wiped by the next run\n")


def trace_to_telemetry() -> str:
    """Every service sends its spans to telemetry over mutual TLS (each with
    its own certificate; they inherit this environment); returns the address
    telemetry is to listen on."""
    port = free_port()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"https://127.0.0.1:{port}"
    os.environ.pop("OTEL_EXPORTER_OTLP_INSECURE", None)
    os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "500")
    return f"127.0.0.1:{port}"


def give_to_guests(workdir: Path, tenant: str) -> None:
    """The tenant's directory for local git repositories (vmhost's guests
    clone only from their tenant's). Sandboxed guests run as their own
    unprivileged uid when we are root: the directory becomes theirs."""
    root = repository_root(workdir) / tenant
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(root, GUEST_UID, GUEST_GID)


def add_tenant(mesh: Mesh, workdir: Path, admin_token: str, tenant: str) -> str:
    """A tenant on the pro plan; returns a new API key's secret."""
    admin = Api(mesh.gateway, admin_token)
    try:
        admin.post("/admin/tenants", {"id": tenant, "plan": "pro"})
        secret: str = admin.post(f"/admin/tenants/{tenant}/api-keys", {"display_name": "swarm up"})["secret"]
    finally:
        admin.close()
    give_to_guests(workdir, tenant)
    return secret


def wait_for_interrupt() -> None:
    """Until Ctrl-C (SIGINT) or SIGTERM."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def up(
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Databases, logs, certificates and repositories go here.")
    ] = Path("var/swarm"),
    tenant: Annotated[
        str, typer.Option("--tenant", help="Also create this tenant (pro plan) and print an API key for it.")
    ] = "",
    llm_upstream: Annotated[
        str,
        typer.Option(
            "--llm-upstream",
            help="The Messages API telemetry's LLM proxy forwards to (default: a local deterministic model).",
        ),
    ] = "",
    agents: Annotated[
        bool, typer.Option("--agents/--no-agents", help="Start vmhost, which runs agents.")
    ] = True,
) -> None:
    """Run the local mesh in the foreground; print the gateway URL and admin token. Ctrl-C stops it."""
    workdir = workdir.resolve()
    fresh_workdir(workdir)
    admin_token = secrets.token_hex(24)
    pki = MeshPki.create(workdir / "pki")
    repository_root(workdir).mkdir(parents=True, exist_ok=True)
    telemetry = trace_to_telemetry()
    with ExitStack() as stack:
        upstream = llm_upstream or str(stack.enter_context(MessagesServer(DemoModel())).base_url)
        mesh = start_mesh(stack, workdir, pki, admin_token, telemetry, upstream)
        if agents:
            start_vmhost(stack, workdir, mesh, {"SWARM_LLM_MODEL": MODEL, "OTEL_BSP_SCHEDULE_DELAY": "500"})
        say(
            " · ".join(f"{k} {v}" for k, v in mesh.targets.items())
            + (f" · vmhost {mesh.vmhost}" if agents else "")
        )
        say(f"tenants' local git repositories: {repository_root(workdir)}/<tenant>/<name>.git")
        say(f"gateway: {mesh.gateway}  (API docs {mesh.gateway}/docs)")
        say(f"admin token: {admin_token}")
        exports = [f"export SWARM_URL={mesh.gateway}", f"export SWARM_ADMIN_TOKEN={admin_token}"]
        if tenant:
            exports.append(f"export SWARM_API_KEY={add_tenant(mesh, workdir, admin_token, tenant)}")
            say(f"tenant {tenant} (pro plan) with an API key")
        for line in exports:
            typer.echo(line)
        say("the mesh is up; Ctrl-C stops it")
        wait_for_interrupt()
        say("stopping...")
