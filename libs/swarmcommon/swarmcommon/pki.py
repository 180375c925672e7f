"""A small PKI for the mesh: one CA, a certificate per workload.

Every workload (the gateway, each service, vmhost, an operator's tool) is
known by a SPIFFE id in the URI SAN of its certificate:

    spiffe://<trust-domain>/service/ticketing
    spiffe://<trust-domain>/operator/alice

    ca = Authority.create("swarm.local")
    ca.write(pki_dir)                                  # ca.pem, ca-key.pem
    ca.issue(service_id("swarm.local", "quota"), dns_names=["quota"]).write(pki_dir / "quota", ca.cert_pem)

`make demo` and the tests make a mesh's worth with `issue_mesh`. In a
cluster, cert-manager issues the same shape of certificate (see
deploy/k8s/README.md); this module is then not used at all.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_TRUST_DOMAIN = "swarm.local"
CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
# A workload's files, named as in a kubernetes.io/tls Secret from cert-manager.
TLS_CERT, TLS_KEY, CA_CERT = "tls.crt", "tls.key", "ca.crt"
# The services of the mesh, each also a DNS name in a cluster.
SERVICES = ("gateway", "ticketing", "quota", "events", "telemetry", "vmhost")


def service_id(trust_domain: str, name: str) -> str:
    return f"spiffe://{trust_domain}/service/{name}"


def operator_id(trust_domain: str, name: str) -> str:
    return f"spiffe://{trust_domain}/operator/{name}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only; replaced atomically so a
    reloading reader never sees half a file. The temporary file is always a
    new one: a leftover (a crash, a symlink) would keep its own mode."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Issued:
    """A workload's certificate (PEM, leaf first) and its private key (PEM)."""

    spiffe_id: str
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, ca_pem: bytes) -> Path:
        """`directory` laid out as cert-manager mounts a certificate's Secret:
        tls.crt, tls.key and ca.crt. The certificate is written last: a
        reloader that sees it changed then reads a key that matches it."""
        directory.mkdir(parents=True, exist_ok=True)
        _write_public(directory / CA_CERT, ca_pem)
        _write_private(directory / TLS_KEY, self.key_pem)
        _write_public(directory / TLS_CERT, self.cert_pem)
        return directory


@dataclass(frozen=True)
class Authority:
    trust_domain: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, trust_domain: str = DEFAULT_TRUST_DOMAIN, days: int = 365) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Swarm"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Swarm mesh CA ({trust_domain})"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(trust_domain, cert, key)

    @classmethod
    def load(cls, directory: Path, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> Authority:
        cert = x509.load_pem_x509_certificate((directory / CA_FILE).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY_FILE).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / CA_KEY_FILE} is not an EC private key")
        return cls(trust_domain, cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        _write_public(directory / CA_FILE, self.cert_pem)
        _write_private(directory / CA_KEY_FILE, _key_pem(self.key))

    def issue(
        self,
        spiffe_id: str,
        *,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
        valid: dt.timedelta = dt.timedelta(days=30),
        not_before: dt.datetime | None = None,
    ) -> Issued:
        """A certificate for one workload, good for server and client use."""
        if not spiffe_id.startswith(f"spiffe://{self.trust_domain}/"):
            raise ValueError(f"{spiffe_id} is outside the trust domain {self.trust_domain}")
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        names += [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        start = not_before or _now() - dt.timedelta(minutes=5)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spiffe_id.rsplit("/", 1)[-1])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + valid)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return Issued(spiffe_id, cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_mesh(
    directory: Path,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    services: Sequence[str] = SERVICES,
    operators: Sequence[str] = ("admin",),
    hosts: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1",),
) -> Authority:
    """A CA (kept if `directory` already has one) and a certificate for each
    service (`<service>/tls.crt`, …) and operator (`operator-<name>/…`)."""
    if (directory / CA_FILE).exists() and (directory / CA_KEY_FILE).exists():
        ca = Authority.load(directory, trust_domain)
    else:
        ca = Authority.create(trust_domain)
        ca.write(directory)
    for name in services:
        issued = ca.issue(service_id(trust_domain, name), dns_names=[name, *hosts], ip_addresses=ips)
        issued.write(directory / name, ca.cert_pem)
    for name in operators:
        ca.issue(operator_id(trust_domain, name)).write(directory / f"operator-{name}", ca.cert_pem)
    return ca
