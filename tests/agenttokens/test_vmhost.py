"""vmhost mints each guest its token, renews it on every heartbeat and
revokes it when the agent ends; an agent heartbeats only as itself; expired,
revoked and foreign tokens are UNAUTHENTICATED at every service."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from swarm.telemetry.v1 import telemetry_pb2 as tel
from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_vmhost import server as vmhost_server
from swarm_vmhost.config import Settings as VmHostSettings
from swarmagent.credentials import AgentCredentials
from swarmagent.guest import Heartbeat
from swarmcommon.agenttoken import PUBLIC_KEY_FILE, TokenVerifier
from swarmcommon.clock import ManualClock
from swarmcommon.security import InsecureConfig
from tests.agenttokens.mesh import AgentMesh, start_mesh
from tests.support.pki import bearer
from tests.support.status import error_info, raises_status
from tests.support.waiting import eventually


@pytest.fixture
def quiet_mesh(urls: dict[str, str], tmp_path: Path) -> Iterator[AgentMesh]:
    """Guests that never heartbeat on their own: the test's calls are the only ones."""
    m = start_mesh(urls, tmp_path, guest_command="sleep 600")
    try:
        yield m
    finally:
        m.stop()


def _spawn(mesh: AgentMesh, tenant: str) -> pb.Agent:
    request = pb.SpawnAgentRequest(tenant_id=tenant, template="default", role=pb.AGENT_ROLE_CODER)
    return mesh.operator_vmhost().SpawnAgent(request).agent


def _verifier(mesh: AgentMesh) -> TokenVerifier:
    return TokenVerifier.from_files([mesh.pki / "agent-signing" / PUBLIC_KEY_FILE])


def _guest_env(mesh: AgentMesh, agent_id: str) -> dict[str, str]:
    handle = mesh.vmhost.host.agents.get_any(agent_id).handle
    assert handle is not None and handle.pid is not None
    raw = Path(f"/proc/{handle.pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_a_guest_holds_only_its_token_and_heartbeats_with_it_over_tls(mesh: AgentMesh) -> None:
    agent = _spawn(mesh, "acme")
    env = _guest_env(mesh, agent.id)
    claims = _verifier(mesh).verify(env["SWARM_AGENT_TOKEN"])
    assert (claims.agent_id, claims.tenant_id, claims.role) == (agent.id, "acme", "coder")
    assert Path(env["SWARM_AGENT_CA_FILE"]) == mesh.ca.resolve()
    # Every target is an agent port (TLS, no client certificate); no plaintext OTLP.
    assert env["SWARM_TICKETING_TARGET"] == f"127.0.0.1:{mesh.ticketing.handle.agent_port}"
    assert env["SWARM_TELEMETRY_TARGET"] == f"127.0.0.1:{mesh.telemetry.handle.agent_port}"
    assert env["SWARM_VMHOST_TARGET"] == f"127.0.0.1:{mesh.vmhost.handle.agent_port}"
    assert "OTEL_EXPORTER_OTLP_INSECURE" not in env
    # The stock guest program heartbeats with it: the agent becomes READY.
    ops = mesh.operator_vmhost()
    eventually(
        lambda: (
            ops.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=agent.id)).agent.state
            == pb.AGENT_STATE_READY
        ),
        what="the guest's first heartbeat",
    )


def test_a_heartbeat_renews_the_token_and_names_the_agent_from_it(quiet_mesh: AgentMesh) -> None:
    mesh = quiet_mesh
    agent = _spawn(mesh, "acme")
    reply = mesh.agent_vmhost().Heartbeat(
        pb.HeartbeatRequest(state=pb.AGENT_STATE_READY), metadata=bearer(mesh.token(agent.id, "acme"))
    )
    assert reply.agent.id == agent.id and reply.agent.state == pb.AGENT_STATE_READY
    renewed = _verifier(mesh).verify(reply.agent_token)
    assert (renewed.agent_id, renewed.tenant_id) == (agent.id, "acme")
    assert reply.agent_token_expire_time.ToDatetime(tzinfo=UTC) == renewed.expires_at
    assert renewed.expires_at > datetime.now(UTC) + timedelta(minutes=10)  # vmhost's default lifetime


def test_the_guest_heartbeat_takes_the_renewed_token_for_every_later_call(quiet_mesh: AgentMesh) -> None:
    mesh = quiet_mesh
    agent = _spawn(mesh, "acme")
    first = mesh.token(agent.id, "acme")
    credentials = AgentCredentials(first, str(mesh.ca))
    target = f"127.0.0.1:{mesh.vmhost.handle.agent_port}"
    heart = Heartbeat(target, "acme", agent.id, 60, credentials)
    try:
        heart.beat()
        assert not heart.gone.is_set()
        assert credentials.token != first
        assert _verifier(mesh).verify(credentials.token).agent_id == agent.id
        # Terminated: the next heartbeat is refused (the token is revoked) and the guest stops.
        mesh.operator_vmhost().TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agent.id))
        heart.beat()
        assert heart.gone.is_set()
    finally:
        heart.stop()


def test_an_agent_cannot_heartbeat_for_another_agent(quiet_mesh: AgentMesh) -> None:
    mesh = quiet_mesh
    mine, neighbour, foreign = _spawn(mesh, "acme"), _spawn(mesh, "acme"), _spawn(mesh, "globex")
    stub, md = mesh.agent_vmhost(), bearer(mesh.token(mine.id, "acme"))
    before = mesh.snapshot()
    with raises_status(grpc.StatusCode.PERMISSION_DENIED) as caught:
        stub.Heartbeat(pb.HeartbeatRequest(agent_id=neighbour.id, state=pb.AGENT_STATE_FAILED), metadata=md)
    assert error_info(caught[0]).reason == "AGENT_MISMATCH"
    with raises_status(grpc.StatusCode.PERMISSION_DENIED, "'globex'") as caught:
        stub.Heartbeat(
            pb.HeartbeatRequest(tenant_id="globex", agent_id=foreign.id, state=pb.AGENT_STATE_FAILED),
            metadata=md,
        )
    assert error_info(caught[0]).reason == "TENANT_MISMATCH"
    assert mesh.snapshot() == before  # nobody failed, nobody's heartbeat recorded
    live = {a.id for a in mesh.vmhost.host.agents.live()}
    assert {neighbour.id, foreign.id} <= live


def _token_refused(mesh: AgentMesh, token: str) -> dict[str, str]:
    """Why each service refuses a call with this token (its ErrorInfo reason),
    or "accepted". Every call is read-only or changes nothing here."""
    md = bearer(token)
    calls: dict[str, Callable[[], Any]] = {
        "ticketing": lambda: mesh.agent_ticketing().GetTicket(
            tpb.GetTicketRequest(ticket_id=str(uuid.uuid4())), metadata=md
        ),
        "telemetry": lambda: mesh.agent_telemetry().CheckBudget(tel.CheckBudgetRequest(), metadata=md),
        "vmhost": lambda: mesh.agent_vmhost().Heartbeat(
            pb.HeartbeatRequest(state=pb.AGENT_STATE_READY), metadata=md
        ),
    }
    reasons = {}
    for service, call in calls.items():
        try:
            call()
            reasons[service] = "accepted"
        except grpc.RpcError as err:
            unauthenticated = err.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
            reasons[service] = error_info(err).reason if unauthenticated else "accepted"
    return reasons


def test_terminating_an_agent_revokes_its_token_everywhere(quiet_mesh: AgentMesh) -> None:
    mesh = quiet_mesh
    mesh.project("acme", ["a"])
    agent = _spawn(mesh, "acme")
    token = mesh.token(agent.id, "acme")
    held = mesh.agent_ticketing().ClaimTicket(tpb.ClaimTicketRequest(), metadata=bearer(token))
    assert held.lease.agent_id == agent.id
    assert set(_token_refused(mesh, token).values()) == {"accepted"}
    mesh.operator_vmhost().TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agent.id))
    # vmhost asks its own store; ticketing and telemetry poll vmhost's list.
    assert eventually(
        lambda: (
            _token_refused(mesh, token)
            == dict.fromkeys(("ticketing", "telemetry", "vmhost"), "TOKEN_REVOKED")
        ),
        timeout=10,
        what="the token refused everywhere",
    )
    # Its lease went back when it was terminated (vmhost -> ticketing over mutual TLS).
    ticket = mesh.operator_ticketing().GetTicket(
        tpb.GetTicketRequest(tenant_id="acme", ticket_id=held.ticket.id)
    )
    assert ticket.ticket.state == tpb.TICKET_STATE_READY


def test_an_expired_token_is_refused_everywhere(quiet_mesh: AgentMesh) -> None:
    mesh = quiet_mesh
    agent = _spawn(mesh, "acme")
    an_hour_ago = ManualClock(datetime.now(UTC) - timedelta(hours=1))
    expired = mesh.token(agent.id, "acme", clock=an_hour_ago)  # five minutes' life, ended 55 minutes ago
    assert _token_refused(mesh, expired) == dict.fromkeys(
        ("ticketing", "telemetry", "vmhost"), "TOKEN_EXPIRED"
    )


def test_a_token_signed_by_another_key_is_refused_everywhere(quiet_mesh: AgentMesh) -> None:
    mesh = quiet_mesh
    agent = _spawn(mesh, "acme")
    forged = mesh.token(agent.id, "acme", key_dir="other-signing")
    assert _token_refused(mesh, forged) == dict.fromkeys(
        ("ticketing", "telemetry", "vmhost"), "TOKEN_UNKNOWN_KEY"
    )


def test_vmhost_outside_insecure_dev_mode_refuses_to_start_without_a_signing_key(
    quiet_mesh: AgentMesh, tmp_path: Path
) -> None:
    settings = VmHostSettings(
        database_url=f"sqlite:///{tmp_path / 'other-vmhost.db'}",
        listen_address="127.0.0.1:0",
        insecure_dev=False,
        tls_dir=str(quiet_mesh.pki / "vmhost"),
        agent_token_public_keys=str(quiet_mesh.pki / "agent-signing" / PUBLIC_KEY_FILE),
    )
    with pytest.raises(InsecureConfig, match="AGENT_TOKEN_SIGNING_KEY"):
        vmhost_server.start(settings)


def test_revocations_are_listed_for_the_services_only(quiet_mesh: AgentMesh) -> None:
    mesh = quiet_mesh
    agent = _spawn(mesh, "acme")
    mesh.operator_vmhost().TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agent.id))
    listed = mesh.operator_vmhost().ListRevokedAgents(pb.ListRevokedAgentsRequest())
    assert [(a.agent_id, a.tenant_id) for a in listed.agents] == [(agent.id, "acme")]
    assert listed.retention.ToTimedelta() >= timedelta(minutes=15)
    later = mesh.operator_vmhost().ListRevokedAgents(
        pb.ListRevokedAgentsRequest(start_time=listed.agents[0].revoke_time)
    )
    assert [a.agent_id for a in later.agents] == [agent.id]
    other = _spawn(mesh, "acme")
    with raises_status(grpc.StatusCode.PERMISSION_DENIED, "may not call"):
        mesh.agent_vmhost().ListRevokedAgents(
            pb.ListRevokedAgentsRequest(), metadata=bearer(mesh.token(other.id, "acme"))
        )
    assert uuid.UUID(other.id)
