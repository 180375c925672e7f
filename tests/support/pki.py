"""Certificates, agent tokens and channels for the security tests.

    pki = make_mesh_pki(tmp_path)                  # issue_mesh + agent signing key + a foreign CA
    ch = tls_channel(target, pki.ca_pem, pki.identity("gateway"))   # mutual TLS as service/gateway
    ch = tls_channel(target, pki.ca_pem)           # TLS, no client certificate (a guest)
    outcome = call(ch, "swarm.quota.v1.QuotaService", "Reserve")   # an empty request; the status

Every channel here uses its own subchannel pool, so a handshake made by one
never serves another: a refused certificate cannot ride on a connection
another channel opened with a good one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from swarmcommon.agenttoken import (
    PUBLIC_KEY_FILE,
    SIGNING_KEY_FILE,
    AgentIdentity,
    TokenSigner,
    write_signing_key,
)
from swarmcommon.clock import Clock
from swarmcommon.pki import (
    CA_CERT,
    DEFAULT_TRUST_DOMAIN,
    TLS_CERT,
    TLS_KEY,
    Authority,
    Issued,
    issue_mesh,
    service_id,
)

# The agent the tests' tokens are minted for (vmhost agent ids are UUIDs).
AGENT = AgentIdentity("7a6e7400-0000-4000-8000-000000000007", "acme", "coder")
OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


@dataclass(frozen=True)
class MeshPki:
    root: Path
    ca: Authority
    # A CA nobody in the mesh trusts, with a certificate claiming service/gateway.
    foreign_ca: Authority
    trust_domain: str = DEFAULT_TRUST_DOMAIN

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    def identity(self, name: str) -> Path:
        """The directory (tls.crt, tls.key, ca.crt) of a service or `operator-<name>`."""
        return self.root / name

    @property
    def foreign_gateway(self) -> Path:
        return self.root / "foreign" / "gateway"

    @property
    def signing_dir(self) -> Path:
        return self.root / "agent-signing"

    @property
    def public_key(self) -> Path:
        return self.signing_dir / PUBLIC_KEY_FILE

    def signer(self, clock: Clock | None = None, ttl: timedelta = timedelta(minutes=15)) -> TokenSigner:
        return TokenSigner.from_file(self.signing_dir / SIGNING_KEY_FILE, clock=clock, ttl=ttl)

    def token(self, agent: AgentIdentity = AGENT) -> str:
        return self.signer().mint(agent)[0]


def make_mesh_pki(directory: Path, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> MeshPki:
    ca = issue_mesh(directory, trust_domain)
    write_signing_key(directory / "agent-signing")
    foreign = Authority.create(trust_domain)
    foreign.issue(
        service_id(trust_domain, "gateway"), dns_names=["gateway", "localhost"], ip_addresses=["127.0.0.1"]
    ).write(directory / "foreign" / "gateway", foreign.cert_pem)
    return MeshPki(directory, ca, foreign, trust_domain)


def signed_by(ca: Authority, names: Sequence[x509.GeneralName], spiffe_id: str = "") -> Issued:
    """A leaf certificate `ca` signs with exactly these SANs, whatever they say
    (Authority.issue insists on one SPIFFE id of its trust domain)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Issued(spiffe_id, cert.public_bytes(serialization.Encoding.PEM), key_pem)


def credentials(ca_pem: bytes, identity: Path | None = None) -> grpc.ChannelCredentials:
    """TLS trusting `ca_pem`, presenting the certificate in `identity` if given."""
    if identity is None:
        return grpc.ssl_channel_credentials(ca_pem)
    return grpc.ssl_channel_credentials(
        ca_pem, (identity / TLS_KEY).read_bytes(), (identity / TLS_CERT).read_bytes()
    )


def tls_channel(target: str, ca_pem: bytes, identity: Path | None = None) -> grpc.Channel:
    return grpc.secure_channel(target, credentials(ca_pem, identity), options=OPTIONS)


def own_channel(target: str, identity: Path) -> grpc.Channel:
    """Mutual TLS with the files of `identity` alone: its certificate, and its ca.crt as the only root."""
    return tls_channel(target, (identity / CA_CERT).read_bytes(), identity)


def plaintext_channel(target: str) -> grpc.Channel:
    """What `grpcurl -plaintext` does."""
    return grpc.insecure_channel(target, options=OPTIONS)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@dataclass(frozen=True)
class Outcome:
    """How a call ended: OK, or the status with its google.rpc.ErrorInfo reason."""

    code: grpc.StatusCode
    details: str = ""
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.code.name} [{self.reason}] {self.details}"


def service_descriptor(full_name: str) -> ServiceDescriptor:
    return descriptor_pool.Default().FindServiceByName(full_name)


def method_names(full_name: str) -> list[str]:
    return [m.name for m in service_descriptor(full_name).methods]


def _reason(err: grpc.RpcError) -> str:
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except ValueError:
        return ""
    for detail in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def call(
    channel: grpc.Channel,
    full_name: str,
    method: str,
    metadata: Sequence[tuple[str, str]] = (),
    timeout: float = 10.0,
) -> Outcome:
    """Call `method` of `full_name` with an empty request; a server stream is
    read up to its first item (or its end, or its error)."""
    desc: MethodDescriptor = service_descriptor(full_name).methods_by_name[method]
    if desc.client_streaming:
        raise ValueError(f"{full_name}/{method}: client-streaming methods are not served")
    request_type = message_factory.GetMessageClass(desc.input_type)
    response_type = message_factory.GetMessageClass(desc.output_type)
    path = f"/{full_name}/{method}"
    kwargs = {
        "request_serializer": request_type.SerializeToString,
        "response_deserializer": response_type.FromString,
    }
    try:
        if desc.server_streaming:
            stream = channel.unary_stream(path, **kwargs)(request_type(), metadata=metadata, timeout=timeout)
            try:
                next(stream, None)
            finally:
                stream.cancel()
        else:
            channel.unary_unary(path, **kwargs)(request_type(), metadata=metadata, timeout=timeout)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.CANCELLED:  # we hung up after the first item
            return Outcome(grpc.StatusCode.OK)
        return Outcome(err.code(), err.details() or "", _reason(err))
    return Outcome(grpc.StatusCode.OK)
