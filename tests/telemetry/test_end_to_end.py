"""One trace across processes: a REST call to the gateway, the gRPC hop it
causes into ticketing, and the agent that later works the ticket, each a
separate process exporting with the stock OTLP exporter to the telemetry
service, which stitches the ticket's trace back together."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from swarm.telemetry.v1 import telemetry_pb2 as pb
from swarmcommon.localproc import free_port, start_service
from tests.support.harness import TelemetryHarness, start_telemetry
from tests.support.waiting import eventually


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def traced_mesh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TelemetryHarness, str, str, str]]:
    sink = start_telemetry(f"sqlite:///{tmp_path / 'telemetry.db'}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{sink.app.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        quota, quota_target = start_service(
            "swarm_quota",
            "SWARM_QUOTA_",
            {"DATABASE_URL": f"sqlite:///{tmp_path / 'quota.db'}", "API_KEY_PEPPER": secrets.token_hex(32)},
        )
        procs.append(quota)
        ticketing, ticketing_target = start_service(
            "swarm_ticketing",
            "SWARM_TICKETING_",
            {"DATABASE_URL": f"sqlite:///{tmp_path / 'ticketing.db'}", "QUOTA_TARGET": quota_target},
        )
        procs.append(ticketing)
        port, admin = free_port(), secrets.token_urlsafe(16)
        env = {
            **os.environ,
            "SWARM_GATEWAY_PORT": str(port),
            "SWARM_GATEWAY_TICKETING_TARGET": ticketing_target,
            "SWARM_GATEWAY_QUOTA_TARGET": quota_target,
            "SWARM_GATEWAY_TELEMETRY_TARGET": f"127.0.0.1:{sink.app.port}",
            "SWARM_GATEWAY_ADMIN_TOKEN": admin,
        }
        gateway = subprocess.Popen([sys.executable, "-m", "swarm_gateway"], env=env)
        procs.append(gateway)
        base = f"http://127.0.0.1:{port}"

        def gateway_ready() -> bool:
            assert gateway.poll() is None, "gateway exited"
            try:
                return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(gateway_ready, timeout=30, interval=0.1, what="gateway ready")
        yield sink, base, admin, ticketing_target
    finally:
        for proc in reversed(procs):
            _stop(proc)
        sink.channel.close()
        sink.app.stop(grace=1)


def test_gateway_ticketing_and_agent_spans_form_one_trace(
    traced_mesh: tuple[TelemetryHarness, str, str, str],
) -> None:
    sink, base, admin, ticketing_target = traced_mesh
    admin_api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    admin_api.post("/admin/tenants", json={"id": "acme", "plan": "pro"}).raise_for_status()
    key = admin_api.post("/admin/tenants/acme/api-keys", json={"display_name": "t"}).json()["secret"]
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    created = api.post("/api/projects", json={"name": "traced", "tickets": [{"key": "a", "name": "A"}]})
    assert created.status_code == 201, created.text
    ticket = created.json()["tickets"][0]["id"]

    agent = subprocess.run(
        [
            sys.executable, "-m", "swarmagent.agent",
            "--ticketing", ticketing_target, "--tenant", "acme", "--agent-id", "coder-7",
            "--work", "tests.telemetry.work:traced_steps", "--max-tickets", "1",
        ],
        timeout=60,
        check=False,
    )  # fmt: skip
    assert agent.returncode == 0
    assert api.get(f"/api/tickets/{ticket}").json()["state"] == "done"

    wanted = {"gateway", "ticketing", "swarm-agent"}

    def joined_trace() -> pb.GetTicketTraceResponse | None:
        try:
            trace = sink.stub.GetTicketTrace(pb.GetTicketTraceRequest(tenant_id="acme", ticket_id=ticket))
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
            return None
        names = {s.name for s in trace.spans}
        # Each process exports on its own schedule: ticketing's claim span
        # can land after the agent's spans, so wait for it too.
        claimed = any(n.endswith("TicketingService/ClaimTicket") for n in names)
        if (
            wanted <= {s.service_name for s in trace.spans}
            and {"git.push", "agent.work"} <= names
            and claimed
        ):
            return trace
        return None

    trace = eventually(
        joined_trace, timeout=20, interval=0.2, what="the three processes' spans meeting in one trace"
    )

    assert len(trace.trace_ids) == 1
    by_id = {s.span_id: s for s in trace.spans}
    work = next(s for s in trace.spans if s.name == "agent.work")
    assert work.service_name == "swarm-agent" and work.agent_id == "coder-7"
    # Walk up from the agent's work to the root: agent -> ticketing -> gateway.
    chain = [work]
    while chain[-1].parent_span_id:
        chain.append(by_id[chain[-1].parent_span_id])
    services = [s.service_name for s in chain]
    assert services[0] == "swarm-agent" and services[-1] == "gateway"
    assert "ticketing" in services
    assert services.index("ticketing") < services.index("gateway")
    create = next(s for s in chain if s.service_name == "ticketing")
    assert create.name.endswith("TicketingService/CreateProject") and create.kind == pb.SPAN_KIND_SERVER
    root = chain[-1]
    assert root.kind == pb.SPAN_KIND_SERVER and "POST /api/projects" in root.name
    # The agent's steps and its calls into ticketing hang under its work span.
    children = {s.name for s in trace.spans if s.parent_span_id == work.span_id}
    assert {"git.clone", "llm.generate_code", "git.push"} <= children
    assert any(n.endswith("TicketingService/SubmitWork") for n in children)
    # Ticketing's side of the claim (a long poll, traced only when it took a
    # ticket) is in the ticket's trace too.
    claims = [s for s in trace.spans if s.name.endswith("TicketingService/ClaimTicket")]
    assert [(s.service_name, s.kind) for s in claims] == [("ticketing", pb.SPAN_KIND_SERVER)]

    # The gateway serves the same tree (spans still arriving may have joined it).
    served = api.get(f"/api/tickets/{ticket}/trace").json()
    assert {s.span_id for s in trace.spans} <= {s["span_id"] for s in served["spans"]}
    assert served["spans"][0]["span_id"] == trace.spans[0].span_id and served["trace_ids"] == list(
        trace.trace_ids
    )
