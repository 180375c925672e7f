"""The exec health probe Kubernetes runs inside each mutual-TLS pod
(`python -m swarmcommon.healthcheck`), against a real TLS server."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from swarmcommon.grpcserver import ServerHandle, start_server
from swarmcommon.healthcheck import main
from swarmcommon.localproc import free_port
from swarmcommon.pki import issue_mesh
from swarmcommon.security import ServerSecurity
from swarmcommon.tls import TlsFiles

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    issue_mesh(directory)
    return directory


@pytest.fixture
def server(pki: Path) -> Iterator[ServerHandle]:
    """ticketing's mesh port: mutual TLS with its certificate (DNS names
    `ticketing` and `localhost`), nothing but grpc.health.v1."""
    handle = start_server(
        [],
        listen_address="127.0.0.1:0",
        security=ServerSecurity("swarm.local", TlsFiles.in_dir(pki / "ticketing")),
    )
    yield handle
    handle.stop(0)


def probe(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_a_serving_server_passes_with_the_pods_own_certificate(pki: Path, server: ServerHandle) -> None:
    # Dialled by address; the name checked is the certificate's own (ticketing).
    code, out, err = probe(f"127.0.0.1:{server.port}", "--tls-dir", str(pki / "ticketing"))
    assert (code, err) == (0, "")
    assert out.strip() == f"healthy: 127.0.0.1:{server.port} is SERVING"


def test_a_draining_server_fails_the_probe(pki: Path, server: ServerHandle) -> None:
    server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    code, out, err = probe(f"127.0.0.1:{server.port}", "--tls-dir", str(pki / "ticketing"))
    assert code == 1 and out == ""
    assert "is NOT_SERVING (the server is starting or draining)" in err


def test_an_unknown_health_service_fails_the_probe(pki: Path, server: ServerHandle) -> None:
    code, _, err = probe(
        f"127.0.0.1:{server.port}", "--tls-dir", str(pki / "ticketing"), "--service", "no.Such"
    )
    assert code == 1
    assert "service 'no.Such' is NOT_FOUND (the server does not know that health service name)" in err


def test_a_certificate_from_another_ca_is_refused(tmp_path: Path, pki: Path, server: ServerHandle) -> None:
    # The server refuses the handshake: the probe cannot pass with a
    # certificate the mesh does not trust, so it proves the real TLS path.
    issue_mesh(tmp_path)
    code, out, err = probe(
        f"127.0.0.1:{server.port}", "--tls-dir", str(tmp_path / "ticketing"), "--timeout", "1"
    )
    assert code == 1 and out == ""
    assert "is UNAVAILABLE" in err or "is DEADLINE_EXCEEDED" in err


def test_a_server_with_another_name_is_refused(pki: Path, server: ServerHandle) -> None:
    # quota's certificate names `quota`; the server answering is ticketing.
    code, _, err = probe(f"127.0.0.1:{server.port}", "--tls-dir", str(pki / "quota"), "--timeout", "1")
    assert code == 1
    assert "is UNAVAILABLE" in err or "is DEADLINE_EXCEEDED" in err
    code, out, _ = probe(
        f"127.0.0.1:{server.port}", "--tls-dir", str(pki / "quota"), "--server-name", "ticketing"
    )
    assert code == 0 and "SERVING" in out


def test_nothing_listening_fails_the_probe(pki: Path) -> None:
    code, _, err = probe(f"127.0.0.1:{free_port()}", "--tls-dir", str(pki / "ticketing"), "--timeout", "1")
    assert code == 1
    assert "is UNAVAILABLE (not listening yet" in err or "is DEADLINE_EXCEEDED" in err


def test_missing_certificate_files_are_named(tmp_path: Path) -> None:
    code, out, err = probe("127.0.0.1:50051", "--tls-dir", str(tmp_path))
    assert code == 1 and out == ""
    assert "cannot probe: TLS files missing" in err
    assert str(tmp_path / "tls.crt") in err and str(tmp_path / "ca.crt") in err


def test_a_non_positive_timeout_is_refused(pki: Path) -> None:
    code, _, err = probe("127.0.0.1:50051", "--tls-dir", str(pki / "ticketing"), "--timeout", "0")
    assert code == 1
    assert "--timeout must be positive" in err


def test_the_module_runs_as_the_kubelet_runs_it(pki: Path, server: ServerHandle) -> None:
    command = [sys.executable, "-m", "swarmcommon.healthcheck", "--tls-dir", str(pki / "ticketing")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    serving = subprocess.run(
        [*command, f"127.0.0.1:{server.port}"], capture_output=True, text=True, timeout=30, env=env, cwd=REPO
    )
    assert serving.returncode == 0, serving.stderr
    assert "is SERVING" in serving.stdout
    server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    draining = subprocess.run(
        [*command, f"127.0.0.1:{server.port}"], capture_output=True, text=True, timeout=30, env=env, cwd=REPO
    )
    assert draining.returncode == 1
    assert "is NOT_SERVING" in draining.stderr
