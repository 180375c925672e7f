"""vmhost on real bridges and namespaces made for each test (root required),
removed afterwards whatever happens."""

from __future__ import annotations

import ipaddress
import os
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from pyroute2 import netns

from swarm.vmhost.v1 import vmhost_pb2_grpc as pb_grpc
from swarm_vmhost import network
from swarm_vmhost import server as vmhost_server
from swarm_vmhost.config import Settings
from swarmcommon.grpcclient import channel

REPO = Path(__file__).resolve().parents[2]

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.fail("vmhost tests create bridges and namespaces: run them as root", pytrace=False)


@dataclass
class VmHostHarness:
    app: vmhost_server.VmHostApp
    channel: grpc.Channel
    stub: pb_grpc.VmHostServiceStub
    bridge: network.Bridge
    settings: Settings

    def stop(self) -> None:
        self.channel.close()
        self.app.stop(grace=1)


def fresh_bridge() -> network.Bridge:
    """A bridge name and subnet no other test run uses."""
    return network.Bridge(
        f"swt{uuid.uuid4().hex[:8]}", ipaddress.IPv4Network(f"10.213.{random.randint(0, 255)}.0/24")
    )


def start_vmhost(db: str, tmp_path: Path, bridge: network.Bridge, **overrides: Any) -> VmHostHarness:
    values: dict[str, Any] = {
        "database_url": db,
        "listen_address": "0.0.0.0:0",  # guests reach it on the bridge address
        "bridge_name": bridge.name,
        "bridge_cidr": str(bridge.network),
        "workroot": str(tmp_path / "vmhost"),
        "monitor_interval_seconds": 0,  # tests run the monitor explicitly unless they say
        "heartbeat_interval_seconds": 0.5,
        "missed_heartbeats": 3,
    }
    settings = Settings(**{**values, **overrides})
    app = vmhost_server.start(settings)
    ch = channel(f"127.0.0.1:{app.port}")
    return VmHostHarness(app, ch, pb_grpc.VmHostServiceStub(ch), bridge, settings)


@pytest.fixture
def make_vmhost(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., VmHostHarness]]:
    """Start vmhost(s) on one fresh bridge; everything is torn down after."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # guests import tests.vmhost.*
    bridge = fresh_bridge()
    started: list[VmHostHarness] = []

    def make(**overrides: Any) -> VmHostHarness:
        harness = start_vmhost(db, tmp_path, bridge, **overrides)
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
