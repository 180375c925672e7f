"""vmhost on a real bridge made for the test (root required)."""

from __future__ import annotations

import ipaddress
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from swarm.vmhost.v1 import vmhost_pb2_grpc as pb_grpc
from swarm_vmhost import network
from swarm_vmhost import server as vmhost_server
from swarm_vmhost.config import Settings
from swarmcommon.grpcclient import channel

REPO = Path(__file__).resolve().parents[2]


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
