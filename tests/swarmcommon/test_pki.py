"""The mesh PKI: what a workload certificate says, whom it may name, and
how its files are written."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from swarmcommon.pki import (
    CA_CERT,
    CA_FILE,
    CA_KEY_FILE,
    SERVICES,
    TLS_CERT,
    TLS_KEY,
    Authority,
    issue_mesh,
    operator_id,
    service_id,
)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority.create("swarm.local")


def test_a_workload_certificate_carries_its_spiffe_id_and_names(ca: Authority) -> None:
    issued = ca.issue(service_id("swarm.local", "quota"), dns_names=["quota"], ip_addresses=["127.0.0.1"])
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    sans = _sans(cert)
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://swarm.local/service/quota"]
    assert sans.get_values_for_type(x509.DNSName) == ["quota"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    cert.verify_directly_issued_by(ca.cert)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert issued.spiffe_id == "spiffe://swarm.local/service/quota"


def test_the_ca_can_sign_certificates_and_nothing_below_it_can(ca: Authority) -> None:
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True and constraints.path_length == 0
    assert ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


@pytest.mark.parametrize(
    "spiffe_id",
    [
        "spiffe://evil.local/service/quota",
        "spiffe://swarm.local.evil/service/quota",  # the trust domain as a prefix of another
        "spiffe://swarm.localhost/service/quota",
        "spiffe://swarm.local",
        "https://swarm.local/service/quota",
        "quota",
    ],
)
def test_a_ca_issues_nothing_outside_its_trust_domain(ca: Authority, spiffe_id: str) -> None:
    with pytest.raises(ValueError, match="outside the trust domain"):
        ca.issue(spiffe_id)


def test_issue_mesh_writes_every_workload_in_cert_managers_layout(tmp_path: Path) -> None:
    ca = issue_mesh(tmp_path, operators=("admin", "bob"))
    for name in SERVICES:
        directory = tmp_path / name
        cert = _cert(directory / TLS_CERT)
        assert _sans(cert).get_values_for_type(x509.UniformResourceIdentifier) == [
            service_id("swarm.local", name)
        ]
        assert name in _sans(cert).get_values_for_type(x509.DNSName)
        cert.verify_directly_issued_by(ca.cert)
        assert (directory / CA_CERT).read_bytes() == ca.cert_pem
        key = x509.load_pem_x509_certificate((directory / TLS_CERT).read_bytes()).public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
    for name in ("admin", "bob"):
        cert = _cert(tmp_path / f"operator-{name}" / TLS_CERT)
        assert _sans(cert).get_values_for_type(x509.UniformResourceIdentifier) == [
            operator_id("swarm.local", name)
        ]


def test_issue_mesh_keeps_an_existing_ca(tmp_path: Path) -> None:
    """Re-run (`make demo` twice), the mesh keeps its CA: certificates issued before still verify."""
    first = issue_mesh(tmp_path)
    earlier = _cert(tmp_path / "quota" / TLS_CERT)
    second = issue_mesh(tmp_path)
    assert second.cert == first.cert
    earlier.verify_directly_issued_by(second.cert)
    assert _cert(tmp_path / "quota" / TLS_CERT) != earlier  # the workloads got new certificates


def test_private_keys_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    ca = issue_mesh(tmp_path)
    assert _mode(tmp_path / CA_KEY_FILE) == 0o600
    assert _mode(tmp_path / "quota" / TLS_KEY) == 0o600
    assert _mode(tmp_path / "operator-admin" / TLS_KEY) == 0o600
    assert Authority.load(tmp_path).cert == ca.cert
    assert (tmp_path / CA_FILE).read_bytes() == ca.cert_pem


def test_a_key_rewritten_over_a_world_readable_leftover_is_still_owner_only(tmp_path: Path) -> None:
    """A crash can leave `tls.key.tmp` behind with any mode (or an operator
    can have made one readable): the next write must not inherit it."""
    ca = Authority.create()
    directory = tmp_path / "quota"
    directory.mkdir()
    for leftover in (directory / f"{TLS_KEY}.tmp", directory / TLS_KEY):
        leftover.write_bytes(b"old")
        leftover.chmod(0o644)
    ca.issue(service_id("swarm.local", "quota")).write(directory, ca.cert_pem)
    assert _mode(directory / TLS_KEY) == 0o600
    assert b"PRIVATE KEY" in (directory / TLS_KEY).read_bytes()


def test_a_ca_key_that_is_not_ec_is_refused_on_load(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    Authority.create().write(tmp_path)
    (tmp_path / CA_KEY_FILE).write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ValueError, match="not an EC private key"):
        Authority.load(tmp_path)
