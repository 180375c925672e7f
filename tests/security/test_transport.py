"""Transport security on real servers with real TLS: who gets a connection,
who is identified as what, and certificates rotating without a restart."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from swarm.quota.v1 import quota_pb2, quota_pb2_grpc
from swarmcommon import tls
from swarmcommon.agenttoken import TokenSigner
from swarmcommon.clients import ServiceChannel
from swarmcommon.clients.channel import _Reconnecting
from swarmcommon.clock import ManualClock
from swarmcommon.errors import SwarmError
from swarmcommon.pki import CA_CERT, TLS_CERT, TLS_KEY, Authority, operator_id, service_id
from swarmcommon.tls import ClientTls
from tests.support.pki import (
    AGENT,
    MeshPki,
    Outcome,
    bearer,
    call,
    own_channel,
    plaintext_channel,
    signed_by,
    tls_channel,
)
from tests.support.secure import SecureService, start_secure
from tests.support.waiting import eventually

QUOTA = "swarm.quota.v1.QuotaService"
TICKETING = "swarm.ticketing.v1.TicketingService"
OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
# On each agent port, an RPC agents may call.
AGENT_CALLS = {
    "ticketing": (TICKETING, "GetTicket"),
    "telemetry": ("swarm.telemetry.v1.TelemetryService", "CheckBudget"),
    "vmhost": ("swarm.vmhost.v1.VmHostService", "Heartbeat"),
}


def status(
    channel: grpc.Channel, full_name: str, method: str, metadata: Sequence[tuple[str, str]] = ()
) -> Outcome:
    """`call` on a channel of its own, closed afterwards (a fresh handshake each time)."""
    with channel:
        return call(channel, full_name, method, metadata=metadata)


def admitted(outcome: Outcome) -> bool:
    """Through the handshake and the authorization check (the servicer may still refuse an empty request)."""
    return outcome.code not in (UNAVAILABLE, UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


# -- the mesh port: mutual TLS with a certificate of the mesh CA -------------------------------------


def test_a_certificate_of_the_mesh_ca_gets_in(pki: MeshPki, servers: dict[str, SecureService]) -> None:
    outcome = status(own_channel(servers["quota"].target, pki.identity("gateway")), QUOTA, "ListTenants")
    assert outcome.code == OK, outcome


def test_a_client_without_a_certificate_is_refused_at_the_handshake(
    pki: MeshPki, servers: dict[str, SecureService]
) -> None:
    outcome = status(tls_channel(servers["quota"].target, pki.ca_pem), QUOTA, "ListTenants")
    assert outcome.code == UNAVAILABLE, outcome


def test_plaintext_is_refused_on_every_port(servers: dict[str, SecureService]) -> None:
    """What `grpcurl -plaintext` does: no TLS, so no connection at all."""
    ticketing = servers["ticketing"]
    for target in (servers["quota"].target, ticketing.target, ticketing.agent_target):
        outcome = status(plaintext_channel(target), TICKETING, "GetTicket", metadata=bearer("x"))
        assert outcome.code == UNAVAILABLE, (target, outcome)


def test_a_certificate_from_a_foreign_ca_is_refused(pki: MeshPki, servers: dict[str, SecureService]) -> None:
    """A CA outside the mesh minting spiffe://swarm.local/service/gateway gets nothing,
    whether its client trusts the mesh CA or only its own."""
    target = servers["quota"].target
    forged = status(tls_channel(target, pki.ca_pem, pki.foreign_gateway), QUOTA, "ListTenants")
    assert forged.code == UNAVAILABLE, forged
    alien = status(own_channel(target, pki.foreign_gateway), QUOTA, "ListTenants")
    assert alien.code == UNAVAILABLE, alien


def test_an_expired_mesh_certificate_is_refused(
    pki: MeshPki, servers: dict[str, SecureService], tmp_path: Path
) -> None:
    expired = pki.ca.issue(
        service_id(pki.trust_domain, "gateway"),
        not_before=datetime.now(UTC) - timedelta(days=2),
        valid=timedelta(days=1),
    ).write(tmp_path / "expired", pki.ca_pem)
    outcome = status(own_channel(servers["quota"].target, expired), QUOTA, "ListTenants")
    assert outcome.code == UNAVAILABLE, outcome


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        pytest.param([x509.DNSName("gateway")], "NO_CREDENTIALS", id="no-spiffe-id"),
        pytest.param(
            [
                x509.UniformResourceIdentifier("spiffe://swarm.local/service/gateway"),
                x509.UniformResourceIdentifier("spiffe://swarm.local/service/vmhost"),
            ],
            "NO_CREDENTIALS",
            id="two-spiffe-ids",
        ),
        pytest.param(
            [x509.UniformResourceIdentifier("spiffe://evil.local/service/gateway")],
            "FOREIGN_IDENTITY",
            id="other-trust-domain",
        ),
        pytest.param(
            [x509.UniformResourceIdentifier("spiffe://swarm.local.evil/service/gateway")],
            "FOREIGN_IDENTITY",
            id="trust-domain-prefix",
        ),
        pytest.param(
            [x509.UniformResourceIdentifier("spiffe://swarm.local/agent/agent-7")],
            "UNKNOWN_IDENTITY",
            id="agent-path",
        ),
        pytest.param(
            [x509.UniformResourceIdentifier("spiffe://swarm.local/service/gateway/extra")],
            "UNKNOWN_IDENTITY",
            id="nested-path",
        ),
        pytest.param(
            [x509.UniformResourceIdentifier("spiffe://swarm.local/operator/")],
            "UNKNOWN_IDENTITY",
            id="empty-name",
        ),
    ],
)
def test_a_mesh_signed_certificate_naming_no_workload_is_unauthenticated(
    pki: MeshPki,
    servers: dict[str, SecureService],
    tmp_path: Path,
    names: list[x509.GeneralName],
    reason: str,
) -> None:
    """The handshake passes (the mesh CA signed it), but its identity names no
    service or operator of this trust domain: nothing is let through."""
    identity = signed_by(pki.ca, names).write(tmp_path / "odd", pki.ca_pem)
    outcome = status(own_channel(servers["quota"].target, identity), QUOTA, "ListTenants")
    assert (outcome.code, outcome.reason) == (UNAUTHENTICATED, reason), outcome


def test_operators_and_services_are_told_apart_by_their_spiffe_ids(
    pki: MeshPki, servers: dict[str, SecureService], tmp_path: Path
) -> None:
    """An operator certificate named like a service is still an operator: it may
    not Reserve (vmhost only), although service/vmhost may."""
    target = servers["quota"].target
    fake = pki.ca.issue(operator_id(pki.trust_domain, "vmhost")).write(tmp_path / "op-vmhost", pki.ca_pem)
    outcome = status(own_channel(target, fake), QUOTA, "Reserve")
    assert (outcome.code, outcome.reason) == (grpc.StatusCode.PERMISSION_DENIED, "METHOD_NOT_ALLOWED"), (
        outcome
    )
    assert "operator/vmhost" in outcome.details
    real = status(own_channel(target, pki.identity("vmhost")), QUOTA, "Reserve")
    assert admitted(real), real


# -- the agent port: TLS without client certificates, a token on every call ---------------------------


@pytest.mark.parametrize("service", sorted(AGENT_CALLS))
def test_an_agent_port_lets_in_a_valid_token_only(
    pki: MeshPki, servers: dict[str, SecureService], service: str
) -> None:
    full_name, method = AGENT_CALLS[service]
    target = servers[service].agent_target
    now = datetime.now(UTC)
    foreign_signer = TokenSigner(Ed25519PrivateKey.generate())
    refusals = {
        "no token": ([], "NO_CREDENTIALS"),
        "garbage": (bearer("garbage.not.ajwt"), "TOKEN_MALFORMED"),
        "not bearer": ([("authorization", f"Basic {pki.token()}")], "TOKEN_MALFORMED"),
        "expired": (
            bearer(pki.signer(clock=ManualClock(now - timedelta(hours=1))).mint(AGENT)[0]),
            "TOKEN_EXPIRED",
        ),
        "another key": (bearer(foreign_signer.mint(AGENT)[0]), "TOKEN_UNKNOWN_KEY"),
        "too long": (bearer("a" * 5000), "TOKEN_MALFORMED"),
    }
    for name, (metadata, reason) in refusals.items():
        outcome = status(tls_channel(target, pki.ca_pem), full_name, method, metadata=metadata)
        assert (outcome.code, outcome.reason) == (UNAUTHENTICATED, reason), (name, outcome)
    good = status(tls_channel(target, pki.ca_pem), full_name, method, metadata=bearer(pki.token()))
    assert admitted(good), good


def test_a_token_does_not_open_the_mesh_port(pki: MeshPki, servers: dict[str, SecureService]) -> None:
    """The mesh port asks for a certificate before any call: a guest's token is no substitute."""
    ticketing = servers["ticketing"]
    outcome = status(
        tls_channel(ticketing.target, pki.ca_pem), TICKETING, "GetTicket", metadata=bearer(pki.token())
    )
    assert outcome.code == UNAVAILABLE, outcome


# -- reflection --------------------------------------------------------------------------------------


def _reflect(channel: grpc.Channel, metadata: list[tuple[str, str]] | None = None) -> list[str]:
    with channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata, timeout=10
        )
        return [s.name for reply in replies for s in reply.list_services_response.service]


def test_reflection_is_unimplemented_by_default(pki: MeshPki, servers: dict[str, SecureService]) -> None:
    """What `grpcurl list` asks first: not served unless a service is told to."""
    ticketing = servers["ticketing"]
    attempts = [
        (own_channel(ticketing.target, pki.identity("operator-admin")), None),
        (tls_channel(ticketing.agent_target, pki.ca_pem), bearer(pki.token())),
    ]
    for channel, metadata in attempts:
        with pytest.raises(grpc.RpcError) as info:
            _reflect(channel, metadata)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED, info.value.details()


def test_enabled_reflection_is_for_the_mesh_not_for_agents(pki: MeshPki, tmp_path: Path) -> None:
    svc = start_secure("ticketing", pki, tmp_path, reflection=True)
    try:
        names = _reflect(own_channel(svc.target, pki.identity("operator-admin")))
        assert TICKETING in names
        with pytest.raises(grpc.RpcError) as info:
            _reflect(tls_channel(svc.agent_target, pki.ca_pem), bearer(pki.token()))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            _reflect(tls_channel(svc.agent_target, pki.ca_pem))
        assert info.value.code() == UNAUTHENTICATED, info.value.details()
    finally:
        svc.stop()


# -- rotation without restart ------------------------------------------------------------------------


def _copy(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def _reissue(ca: Authority, name: str, directory: Path) -> Path:
    """`directory`'s certificate replaced by one of `ca` for service `name` (as cert-manager renews)."""
    issued = ca.issue(
        service_id(ca.trust_domain, name), dns_names=[name, "localhost"], ip_addresses=["127.0.0.1"]
    )
    return issued.write(directory, ca.cert_pem)


@pytest.fixture
def rotating_ticketing(pki: MeshPki, tmp_path: Path) -> Iterator[tuple[SecureService, Path]]:
    """Ticketing on its own copy of its certificate files, which the test rewrites."""
    tls_dir = _copy(pki.identity("ticketing"), tmp_path / "ticketing-tls")
    svc = start_secure("ticketing", pki, tmp_path, tls_dir=tls_dir)
    try:
        yield svc, tls_dir
    finally:
        svc.stop()


def test_a_server_takes_new_certificates_without_a_restart(
    pki: MeshPki, rotating_ticketing: tuple[SecureService, Path], tmp_path: Path
) -> None:
    svc, tls_dir = rotating_ticketing
    old_gateway = pki.identity("gateway")
    before = status(own_channel(svc.target, old_gateway), TICKETING, "ListProjects")
    assert admitted(before), before

    new_ca = Authority.create(pki.trust_domain)
    new_gateway = _reissue(new_ca, "gateway", tmp_path / "gateway-new")
    _reissue(new_ca, "ticketing", tls_dir)

    def new_ca_in() -> bool:
        outcome = status(own_channel(svc.target, new_gateway), TICKETING, "ListProjects")
        assert admitted(outcome), outcome
        return True

    eventually(new_ca_in, what="the server serving its new certificate")
    # The old CA is trusted no more, in either direction.
    assert status(own_channel(svc.target, old_gateway), TICKETING, "ListProjects").code == UNAVAILABLE
    mixed = status(tls_channel(svc.target, new_ca.cert_pem, old_gateway), TICKETING, "ListProjects")
    assert mixed.code == UNAVAILABLE, mixed
    # The agent port serves the new certificate too.
    token = bearer(pki.token())
    agent_new = status(tls_channel(svc.agent_target, new_ca.cert_pem), TICKETING, "GetTicket", metadata=token)
    assert admitted(agent_new), agent_new
    agent_old = status(tls_channel(svc.agent_target, pki.ca_pem), TICKETING, "GetTicket", metadata=token)
    assert agent_old.code == UNAVAILABLE, agent_old


def test_a_key_whose_certificate_is_not_written_yet_is_not_taken(
    pki: MeshPki,
    rotating_ticketing: tuple[SecureService, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Files replaced one by one: a handshake between the new key and its
    certificate still gets the old, working pair; the new one once it is whole."""
    monkeypatch.setattr(tls, "RELOAD_CHECK_SECONDS", 0.0)  # every handshake looks at the files
    svc, tls_dir = rotating_ticketing
    new_ca = Authority.create(pki.trust_domain)
    renewed = new_ca.issue(
        service_id(pki.trust_domain, "ticketing"), dns_names=["localhost"], ip_addresses=["127.0.0.1"]
    )
    (tls_dir / TLS_KEY).write_bytes(renewed.key_pem)
    for _ in range(3):
        outcome = status(own_channel(svc.target, pki.identity("gateway")), TICKETING, "ListProjects")
        assert admitted(outcome), outcome
    (tls_dir / CA_CERT).write_bytes(new_ca.cert_pem)
    (tls_dir / TLS_CERT).write_bytes(renewed.cert_pem)
    new_gateway = _reissue(new_ca, "gateway", tls_dir.parent / "gateway-new")

    def whole() -> bool:
        outcome = status(own_channel(svc.target, new_gateway), TICKETING, "ListProjects")
        assert admitted(outcome), outcome
        return True

    eventually(whole, what="the server serving the new pair")


def test_a_service_channel_between_a_new_key_and_its_certificate_keeps_working(
    pki: MeshPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client side of the same: a channel that looked at its files between
    the key and the certificate stays on its working pair."""
    monkeypatch.setattr(tls, "RELOAD_CHECK_SECONDS", 0.0)  # every call looks at the files
    client_dir = _copy(pki.identity("gateway"), tmp_path / "gateway-tls")
    svc = start_secure("quota", pki, tmp_path)
    channel = ServiceChannel(svc.target, tls=ClientTls.in_dir(client_dir), default_timeout=5)
    try:
        stub = quota_pb2_grpc.QuotaServiceStub(channel.unary)
        stub.ListTenants(quota_pb2.ListTenantsRequest())
        renewed = pki.ca.issue(service_id(pki.trust_domain, "gateway"))
        (client_dir / TLS_KEY).write_bytes(renewed.key_pem)
        for _ in range(3):
            stub.ListTenants(quota_pb2.ListTenantsRequest())
        (client_dir / TLS_CERT).write_bytes(renewed.cert_pem)
        stub.ListTenants(quota_pb2.ListTenantsRequest())
        assert isinstance(channel.raw, _Reconnecting)
        assert channel.raw.current()[1] == 1  # moved once, to the whole new pair
    finally:
        channel.close()
        svc.stop()


def test_a_service_channel_moves_to_its_rotated_client_files(pki: MeshPki, tmp_path: Path) -> None:
    server_dir = _copy(pki.identity("quota"), tmp_path / "quota-tls")
    client_dir = _copy(pki.identity("gateway"), tmp_path / "gateway-tls")
    svc = start_secure("quota", pki, tmp_path, tls_dir=server_dir)
    rotated = ServiceChannel(svc.target, tls=ClientTls.in_dir(client_dir))
    try:
        stub = quota_pb2_grpc.QuotaServiceStub(rotated.unary)
        stub.ListTenants(quota_pb2.ListTenantsRequest())
        assert isinstance(rotated.raw, _Reconnecting)
        first_connection, generation = rotated.raw.current()

        new_ca = Authority.create(pki.trust_domain)
        _reissue(new_ca, "quota", server_dir)
        _reissue(new_ca, "gateway", client_dir)

        def server_rotated() -> bool:
            outcome = status(own_channel(svc.target, pki.identity("gateway")), QUOTA, "ListTenants")
            assert outcome.code == UNAVAILABLE, outcome
            return True

        eventually(server_rotated, what="the server refusing the old CA")

        def moved() -> bool:
            try:
                stub.ListTenants(quota_pb2.ListTenantsRequest())
            except SwarmError as exc:
                raise AssertionError(f"the rotated channel failed: {exc.code} {exc.message}") from exc
            assert isinstance(rotated.raw, _Reconnecting)
            connection, now = rotated.raw.current()
            assert now > generation and connection is not first_connection, "still on the old connection"
            return True

        eventually(moved, what="the channel on a connection with its new files")
        stub.ListTenants(quota_pb2.ListTenantsRequest())
        # A channel on the old files, made now, gets nowhere: the one above works because it moved.
        stale = ServiceChannel(svc.target, tls=ClientTls.in_dir(pki.identity("gateway")), default_timeout=5)
        try:
            with pytest.raises(SwarmError) as info:
                quota_pb2_grpc.QuotaServiceStub(stale.unary).ListTenants(quota_pb2.ListTenantsRequest())
            assert info.value.code == UNAVAILABLE, info.value
        finally:
            stale.close()
    finally:
        rotated.close()
        svc.stop()
