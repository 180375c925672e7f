"""Where /metrics is served: on the gRPC listen address's host, on the
configured port (0: a free one), stopped with the server; a port already
taken is a clear error naming it and the setting to change."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from swarm_events import server as events_server
from swarm_events.config import Settings as EventsSettings
from swarm_quota import server as quota_server
from swarm_quota.config import Settings as QuotaSettings
from swarmcommon.metrics.serving import listen_host
from tests.metrics.scrape import metrics_url, scrape


def _quota(tmp_path: Path, metrics_port: int) -> QuotaSettings:
    return QuotaSettings(
        database_url=f"sqlite:///{tmp_path / 'quota.db'}",
        listen_address="127.0.0.1:0",
        api_key_pepper=secrets.token_hex(32),
        metrics_port=metrics_port,
    )


@pytest.mark.parametrize(
    ("address", "host"),
    [
        pytest.param("0.0.0.0:50051", "0.0.0.0", id="every-ipv4"),
        pytest.param("127.0.0.1:0", "127.0.0.1", id="loopback"),
        pytest.param("[::]:50051", "::", id="every-ipv6"),
        pytest.param("localhost:7000", "localhost", id="name"),
        pytest.param(":50051", "0.0.0.0", id="no-host"),
    ],
)
def test_metrics_bind_the_host_the_grpc_server_binds(address: str, host: str) -> None:
    assert listen_host(address) == host


def test_metrics_are_served_while_the_service_runs_and_stop_with_it(tmp_path: Path) -> None:
    app = quota_server.start(_quota(tmp_path, 0))
    port = app.handle.metrics_port
    try:
        assert "swarm_quota_rejections" in scrape(metrics_url(port)).families
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    finally:
        app.stop(grace=1)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_a_metrics_port_in_use_is_refused_by_name(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            RuntimeError, match=rf"cannot serve /metrics on 127\.0\.0\.1:{port}.*METRICS_PORT"
        ):
            quota_server.start(_quota(tmp_path, port))


def test_a_service_process_with_its_metrics_port_taken_exits_saying_why(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "SWARM_QUOTA_DATABASE_URL": f"sqlite:///{tmp_path / 'quota.db'}",
            "SWARM_QUOTA_LISTEN_ADDRESS": "127.0.0.1:0",
            "SWARM_QUOTA_METRICS_PORT": str(port),
            "SWARM_QUOTA_API_KEY_PEPPER": secrets.token_hex(32),
        }
        done = subprocess.run(
            [sys.executable, "-m", "swarm_quota"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 2, done.stderr
    assert f"refusing to start: cannot serve /metrics on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_each_worker_of_a_supervisor_serves_on_its_own_port(tmp_path: Path) -> None:
    settings = _quota(tmp_path, 9464)
    assert settings.worker_metrics_port() == 9464
    assert settings.model_copy(update={"worker_index": 2}).worker_metrics_port() == 9466
    assert _quota(tmp_path, 0).model_copy(update={"worker_index": 2}).worker_metrics_port() == 0


def test_series_of_fixed_outcomes_exist_before_their_first_event(tmp_path: Path) -> None:
    """rate() and alerts need a series to be there before anything is counted."""
    app = events_server.start(
        EventsSettings(
            database_url=f"sqlite:///{tmp_path / 'events.db'}", listen_address="127.0.0.1:0", metrics_port=0
        )
    )
    try:
        result = scrape(metrics_url(app.handle.metrics_port))
    finally:
        app.stop(grace=1)
    outcomes = {
        s.labels["outcome"] for s in result.samples if s.name == "swarm_events_webhook_deliveries_total"
    }
    assert outcomes == {"succeeded", "http_error", "timed_out", "connection_error"}
