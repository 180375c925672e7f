"""Fault injection for vmhost's host-wide self-healing checks (seed §12's
remediation table): a peer service that stops serving, a database cut off by
the network, a disk that fills up. Each fault is real (a gRPC server's
health status and then the server itself, a TCP partition in front of
PostgreSQL, a small tmpfs filled with a file); each check must see it, take
its remediation once, and see the recovery. (Heartbeats, stale tickets and a
guest's network are injected in test_healing.py, test_stale_tickets.py and
test_netns.py.)"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from swarm.vmhost.v1 import vmhost_pb2 as pb
from tests.support.tcpproxy import TcpProxy, tcp_proxy
from tests.vmhost.harness import VmHostHarness


def _actions(host: VmHostHarness, check: int) -> list[pb.HealingAction]:
    listed = host.stub.ListHealingActions(pb.ListHealingActionsRequest(page_size=100)).actions
    return [a for a in listed if a.check == check]


@pytest.fixture
def peer() -> Iterator[tuple[str, health.HealthServicer, grpc.Server]]:
    """A real gRPC server that answers only health checks, as a mesh service does."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    yield f"127.0.0.1:{port}", servicer, server
    server.stop(0)


def test_a_service_that_stops_serving_is_alerted_once_per_outage(
    make_vmhost: Callable[..., VmHostHarness], peer: tuple[str, health.HealthServicer, grpc.Server]
) -> None:
    target, servicer, server = peer
    host = make_vmhost(ticketing_target=target, default_driver="process", warm_guests=0)
    monitor = host.app.monitor
    monitor.run_once()
    assert monitor.status["services"].healthy

    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    monitor.run_once()
    assert not monitor.status["services"].healthy
    assert "NOT_SERVING" in monitor.status["services"].detail
    (alert,) = _actions(host, pb.HEALTH_CHECK_SERVICES)
    assert alert.type == pb.HEALING_ACTION_TYPE_ALERT and alert.target == "services/ticketing"
    assert target in alert.detail

    server.stop(0)  # worse: it stops answering at all; still the same outage
    monitor.run_once()
    assert "UNAVAILABLE" in monitor.status["services"].detail
    assert len(_actions(host, pb.HEALTH_CHECK_SERVICES)) == 1, "one alert per outage"


def test_a_service_back_to_serving_clears_the_check_and_a_new_outage_alerts_again(
    make_vmhost: Callable[..., VmHostHarness], peer: tuple[str, health.HealthServicer, grpc.Server]
) -> None:
    target, servicer, _ = peer
    host = make_vmhost(ticketing_target=target, default_driver="process", warm_guests=0)
    monitor = host.app.monitor
    for status in ("NOT_SERVING", "SERVING", "NOT_SERVING"):
        servicer.set("", health_pb2.HealthCheckResponse.ServingStatus.Value(status))
        monitor.run_once()
        assert monitor.status["services"].healthy == (status == "SERVING")
    assert len(_actions(host, pb.HEALTH_CHECK_SERVICES)) == 2


@pytest.fixture
def pg_proxy(db: str) -> Iterator[tuple[TcpProxy, str]]:
    """A cuttable TCP proxy in front of the test's PostgreSQL, and the URL
    through it. Requested before make_vmhost, so it outlives vmhost's own
    teardown (which needs its database)."""
    url = urlsplit(db)
    with tcp_proxy(url.hostname or "127.0.0.1", url.port or 5432) as proxy:
        through = url.netloc.replace(f"{url.hostname}:{url.port}", f"127.0.0.1:{proxy.port}")
        yield proxy, urlunsplit(url._replace(netloc=through))


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_a_database_cut_off_is_reported_and_its_step_written_once_it_answers(
    pg_proxy: tuple[TcpProxy, str], make_vmhost: Callable[..., VmHostHarness]
) -> None:
    proxy, url = pg_proxy
    host = make_vmhost(database_url=url, default_driver="process", warm_guests=0)
    monitor = host.app.monitor
    monitor.run_once()
    assert monitor.status["database"].healthy

    proxy.cut()
    monitor.run_once()
    status = monitor.status["database"]
    assert not status.healthy and status.detail.startswith("database refused a query"), status.detail
    monitor.run_once()  # still down: the outage is one incident

    proxy.restore()
    monitor.run_once()
    assert monitor.status["database"].healthy
    (step,) = _actions(host, pb.HEALTH_CHECK_DATABASE)
    assert step.type == pb.HEALING_ACTION_TYPE_CHECKPOINT_DATABASE and step.target == "databases/vmhost"
    assert step.detail.startswith("database refused a query")
    monitor.run_once()
    assert len(_actions(host, pb.HEALTH_CHECK_DATABASE)) == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs for vmhost's workroot (we are root in the test sandbox)."""
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_full_disk_purges_the_logs_of_finished_guests_only(
    make_vmhost: Callable[..., VmHostHarness], small_disk: Path
) -> None:
    host = make_vmhost(
        workroot=str(small_disk), disk_purge_threshold=0.5, default_driver="process", warm_guests=0
    )
    monitor = host.app.monitor
    monitor.run_once()
    assert monitor.status["disk"].healthy

    live = host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme", template="default")).agent
    finished = small_disk / "guests" / "0b7e5c1e-0000-4000-8000-000000000001"
    finished.mkdir(parents=True)
    (finished / "console.log").write_bytes(b"x" * 3 * 1024 * 1024)  # 3 of 4 MiB
    monitor.run_once()
    assert not monitor.status["disk"].healthy
    (step,) = _actions(host, pb.HEALTH_CHECK_DISK)
    assert (
        step.type == pb.HEALING_ACTION_TYPE_PURGE_LOGS and "purged logs of 1 finished guests" in step.detail
    )
    assert not finished.exists(), "the finished guest's logs are gone"
    assert (small_disk / "guests" / live.id).is_dir(), "a live guest's directory is kept"

    monitor.run_once()
    assert monitor.status["disk"].healthy
    assert len(_actions(host, pb.HEALTH_CHECK_DISK)) == 1
