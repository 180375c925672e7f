"""vmhost on a real bridge made for the test (root required)."""

from __future__ import annotations

import ipaddress
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm.ticketing.v1 import ticketing_pb2_grpc as tpb_grpc
from swarm.vmhost.v1 import vmhost_pb2_grpc as pb_grpc
from swarm_vmhost import network
from swarm_vmhost import server as vmhost_server
from swarm_vmhost.config import Settings
from swarmcommon.clock import Clock
from swarmcommon.grpcclient import channel
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
# Every test bridge takes a /24 of this range that nothing on the host uses.
TEST_POOL = ipaddress.IPv4Network("10.213.0.0/16")
# Shared by every test process on this host (concurrent runs included).
BRIDGE_LOCK = Path(tempfile.gettempdir()) / "swarm-vmhost-test-bridges.lock"


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


def fresh_bridge(pool: ipaddress.IPv4Network = TEST_POOL) -> network.Bridge:
    """A new bridge, already up, whose name and subnet nothing else on this
    host uses: chosen from the host's addresses and routes and created under
    a lock file every test run shares, so concurrent tests and runs never
    collide. The caller removes it (network.remove_bridge)."""
    return network.claim_bridge(pool, "swt", BRIDGE_LOCK)


def start_vmhost(
    db: str, tmp_path: Path, bridge: network.Bridge, clock: Clock | None = None, **overrides: Any
) -> VmHostHarness:
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
    app = vmhost_server.start(settings, clock)
    ch = channel(f"127.0.0.1:{app.port}")
    return VmHostHarness(app, ch, pb_grpc.VmHostServiceStub(ch), bridge, settings)


def one_ticket_each(
    tickets: tpb_grpc.TicketingServiceStub, tenants: Sequence[str], timeout: float, interval: float = 0.2
) -> dict[str, dict[str, Any]]:
    """A project of one ticket for each tenant, then each ticket's result
    (its result_json) once it is done; a quarantined ticket fails at once."""
    ticket_ids = {
        t: tickets.CreateProject(
            tpb.CreateProjectRequest(tenant_id=t, name="p", tickets=[tpb.TicketSpec(key="a", name="A")])
        )
        .tickets[0]
        .id
        for t in tenants
    }

    def result(tenant: str) -> dict[str, Any] | None:
        t = tickets.GetTicket(tpb.GetTicketRequest(tenant_id=tenant, ticket_id=ticket_ids[tenant])).ticket
        assert t.state != tpb.TICKET_STATE_QUARANTINED, f"{tenant}'s work failed: quarantined"
        return dict(json.loads(t.result_json)) if t.state == tpb.TICKET_STATE_DONE else None

    return {
        t: eventually(lambda t=t: result(t), timeout=timeout, interval=interval, what=f"{t}'s result")
        for t in tenants
    }
