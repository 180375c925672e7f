"""An HTTPS listener (the LLM proxy) serves a rotated certificate from the
next handshake on, without a restart."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmcommon.pki import Authority, service_id
from swarmcommon.tls import TlsFiles, https_server_context
from tests.support.waiting import eventually


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    ca = Authority.create()
    ca.issue(service_id(ca.trust_domain, "telemetry"), dns_names=["telemetry"]).write(tmp_path, ca.cert_pem)
    context = https_server_context(TlsFiles.in_dir(tmp_path))
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], tmp_path
    stop.set()
    listener.close()
    thread.join(timeout=5)


def _handshake(port: int, ca_pem: bytes) -> bool:
    client = ssl.create_default_context(cadata=ca_pem.decode())
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client.wrap_socket(raw, server_hostname="telemetry") as tls:
                return tls.recv(2) == b"ok"
    except (OSError, ssl.SSLError):
        return False


def test_a_rotated_certificate_is_served_without_a_restart(served: tuple[int, Path]) -> None:
    port, directory = served
    old_ca = (directory / "ca.crt").read_bytes()
    assert _handshake(port, old_ca)
    new = Authority.create()
    rotated = new.issue(service_id(new.trust_domain, "telemetry"), dns_names=["telemetry"])
    rotated.write(directory, new.cert_pem)
    eventually(lambda: _handshake(port, new.cert_pem), timeout=10, what="the new certificate served")
    assert not _handshake(port, old_ca)  # the old one is gone
