"""Spawn-to-ready per driver: how long from SpawnAgent until the guest is up.

vmhost runs in this process on a bridge of its own (root needed for netns);
each spawn starts the real guest program (`python -m swarmagent.guest`,
heartbeating, no work). Two figures per driver, p50/p95 over --spawns:

- spawn_ms: the SpawnAgent call: address, sandbox (namespace, veth on the
  bridge, cgroups) and the guest process started;
- ready_ms: until vmhost has the guest's first heartbeat (Python starting
  and importing the agent runtime dominates this where nothing is warm);
- restore_ms (qemu, gvisor): until the guest restored from its snapshot runs.

Variants: `netns` takes each guest from a warm sandbox (swarm_vmhost.warmpool;
the benchmark waits for the pool to refill between spawns, so it measures a
spawn with capacity ready), `netns_cold` starts every sandbox cold.
`gvisor` takes each guest restored ahead from the snapshot vmhost takes
when it starts (restore_ms: the `runsc restore`, done before the spawn,
inside the guest's limits; the guest has the runtime imported; the
benchmark waits for the pool to refill between spawns), `gvisor_cold`
starts each sandbox cold (at most COLD_SPAWNS: Python under
gVisor's ptrace platform is slow). A cold guest heartbeats before importing
its work function; cold_runtime_imported_ms is how long the snapshot's own
cold start took to import the runtime, the wait a restore saves.

    python bench/spawn.py [--spawns 20] [--drivers netns,netns_cold,gvisor,gvisor_cold,process,qemu]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm.vmhost.v1 import vmhost_pb2_grpc as pb_grpc
from swarm_vmhost import network
from swarm_vmhost import server as vmhost_server
from swarm_vmhost.config import Settings
from swarm_vmhost.domain import DriverName
from swarm_vmhost.drivers.gvisor import GvisorDriver
from swarm_vmhost.drivers.qemu import QemuDriver
from swarmcommon.grpcclient import channel

sys.path.insert(0, str(Path(__file__).parent))
from claims import percentile  # noqa: E402

# Benchmarks' bridges come from their own range, chosen under the same kind
# of lock as the tests' (see network.claim_bridge), so a benchmark can run
# beside a test run without sharing a subnet.
POOL = ipaddress.IPv4Network("10.214.0.0/16")
LOCK = Path(tempfile.gettempdir()) / "swarm-vmhost-bench-bridges.lock"


# name -> (driver, vmhost settings for it)
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "netns": ("netns", {"warm_guests": 2}),
    "netns_cold": ("netns", {"warm_guests": 0}),
    "gvisor": ("gvisor", {"warm_guests": 1}),
    "gvisor_cold": ("gvisor", {"warm_guests": 0}),
    "process": ("process", {}),
    "qemu": ("qemu", {}),
}
# Variants whose every spawn takes seconds: fewer of them.
COLD_SPAWNS = {"gvisor_cold": 5}


def run(variant: str, spawns: int, workdir: Path) -> dict[str, object]:
    driver, overrides = VARIANTS[variant]
    if network.probe() is None:
        bridge = network.claim_bridge(POOL, "swb", LOCK)
    else:  # process guests only: no bridge is made
        bridge = network.Bridge("swbnone", next(POOL.subnets(new_prefix=24)))
    app = vmhost_server.start(
        Settings(
            database_url=f"sqlite:///{workdir / f'{driver}.db'}",
            guest_image_dir=str(Path(__file__).resolve().parents[1] / "build" / "guest"),
            listen_address="0.0.0.0:0",
            bridge_name=bridge.name,
            bridge_cidr=str(bridge.network),
            workroot=str(workdir / variant),
            monitor_interval_seconds=0,
            heartbeat_interval_seconds=0.2,
            log_level="WARNING",
            # Spawn latency, not security: plaintext, guests without tokens.
            insecure_dev=True,
            **overrides,  # type: ignore[arg-type]
        )
    )
    ch = channel(f"127.0.0.1:{app.port}")
    stub = pb_grpc.VmHostServiceStub(ch)
    spawn_ms, ready_ms, restore_ms = [], [], []
    extra: dict[str, object] = {}
    try:
        if driver == "qemu":
            qemu = app.host.drivers[DriverName.QEMU]
            if (why := qemu.probe()) is not None:
                return {"skipped": why}
            assert isinstance(qemu, QemuDriver)
            qemu.ensure_template()  # once per host, not per spawn
        driver_impl = app.host.drivers[DriverName(driver)]
        for _ in range(spawns):
            if hasattr(driver_impl, "wait_warm"):
                driver_impl.wait_warm(timeout=120)  # a warm sandbox ready, as in steady state
            t0 = time.perf_counter()
            agent = stub.SpawnAgent(
                pb.SpawnAgentRequest(
                    tenant_id="bench", template="default", driver=pb.Driver.Value(f"DRIVER_{driver.upper()}")
                )
            ).agent
            spawn_ms.append((time.perf_counter() - t0) * 1000)
            while stub.GetAgent(pb.GetAgentRequest(tenant_id="bench", agent_id=agent.id)).agent.state not in (
                pb.AGENT_STATE_READY,
                pb.AGENT_STATE_BUSY,
            ):
                if time.perf_counter() - t0 > 60:
                    raise RuntimeError(f"{driver} guest never became ready; see {workdir / driver}")
                time.sleep(0.005)
            ready_ms.append((time.perf_counter() - t0) * 1000)
            handle = app.host.agents.get_any(agent.id).handle
            if handle is not None and "restore_ms" in handle.data:
                restore_ms.append(float(handle.data["restore_ms"]))
            stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="bench", agent_id=agent.id))
        extra = snapshot_figures(driver_impl)
    finally:
        ch.close()
        app.stop(grace=1)
        network.remove_bridge(bridge)
    restore = (
        {
            "restore_p50_ms": round(statistics.median(restore_ms), 1),
            "restore_p95_ms": round(percentile(restore_ms, 0.95), 1),
        }
        if restore_ms
        else {}
    )
    return {
        **restore,
        **extra,
        "spawns": spawns,
        "spawn_p50_ms": round(statistics.median(spawn_ms), 1),
        "spawn_p95_ms": round(percentile(spawn_ms, 0.95), 1),
        "ready_p50_ms": round(statistics.median(ready_ms), 1),
        "ready_p95_ms": round(percentile(ready_ms, 0.95), 1),
    }


def snapshot_figures(driver: object) -> dict[str, object]:
    """gvisor: how long the snapshot's guest took to start cold until the
    runtime was imported (what each restore saves; the guest measured above
    heartbeats before it imports its work function)."""
    template = driver.template if isinstance(driver, GvisorDriver) else None
    return {"cold_runtime_imported_ms": round(template.cold_seconds * 1000, 1)} if template else {}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spawns", type=int, default=20)
    parser.add_argument("--drivers", default=",".join(VARIANTS))
    args = parser.parse_args()
    results: dict[str, object] = {"benchmark": "spawn"}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.drivers.split(","):
            if VARIANTS[variant][0] != "process" and os.geteuid() != 0:
                results[variant] = {"skipped": "needs root"}
                continue
            spawns = min(args.spawns, COLD_SPAWNS.get(variant, args.spawns))
            results[variant] = run(variant, spawns, Path(tmp))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
