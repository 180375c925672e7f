"""vmhost on real bridges and namespaces made for each test (root required),
removed afterwards whatever happens."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import netns

from swarm.ticketing.v1 import ticketing_pb2_grpc as tpb_grpc
from swarm_ticketing import server as ticketing_server
from swarm_ticketing.config import Settings as TicketingSettings
from swarm_vmhost import network
from swarmcommon.clock import Clock
from swarmcommon.grpcclient import channel
from tests.vmhost.harness import REPO, VmHostHarness, fresh_bridge, start_vmhost

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.fail("vmhost tests create bridges and namespaces: run them as root", pytrace=False)


@pytest.fixture
def make_vmhost(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., VmHostHarness]]:
    """Start vmhost(s) on one fresh bridge; everything is torn down after."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # guests import tests.vmhost.*
    bridge = fresh_bridge()
    started: list[VmHostHarness] = []

    def make(clock: Clock | None = None, **overrides: Any) -> VmHostHarness:
        harness = start_vmhost(db, tmp_path, bridge, clock, **overrides)
        started.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in started:
            try:
                harness.stop()
            except Exception:  # noqa: BLE001 - keep cleaning up
                pass
        for name in netns.listnetns():
            if name.startswith(f"{bridge.name}-"):
                netns.remove(name)
        network.remove_bridge(bridge)


@pytest.fixture
def ticketing(tmp_path: Path) -> Iterator[tuple[ticketing_server.Ticketing, tpb_grpc.TicketingServiceStub]]:
    """Ticketing on its own SQLite file, on every address: guests reach it through the bridge."""
    app = ticketing_server.start(
        TicketingSettings(
            database_url=f"sqlite:///{tmp_path / 'ticketing.db'}",
            listen_address="0.0.0.0:0",
            reaper_interval_seconds=0,
        )
    )
    ch = channel(f"127.0.0.1:{app.port}")
    yield app, tpb_grpc.TicketingServiceStub(ch)
    ch.close()
    app.stop(grace=1)
