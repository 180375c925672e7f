"""Fleet scale: thousands of connected agents long-polling one ticketing process.

One ticketing process (its own OS process, one worker, on PostgreSQL) and,
in this process, N agents as grpc.aio clients, each on its own channel (its
own connection, as each VM has), for N in --agents (default 500, 2000, 5000):

1. idle: every agent parks in ClaimTicket with a 60 s wait (the cap, what
   the agent loop asks for) and asks again when a wait ends (first waits
   spread over 1-60 s, as agents that started at different times: the
   steady rate of re-polls from the start). Once all are parked: ticketing's
   CPU share over a 30 s window, and its memory per parked agent (resident-set growth since
   before the agents connected, / N).
2. ready -> claimed: tickets created one at a time (CreateProject of one
   ticket; the next once the last was claimed). Ticketing's own figure
   (GetClaimStats: from the commit that made a ticket ready to its claim),
   and end to end from here, the create sent to the claim reaching its agent.
3. DAG hop: a parent and its child; an agent submits the parent; from the
   submit being sent to the child's claim reaching an agent, p50/p99.
4. The share of claims in phases 2-3 handed to a parked poller (sync-match
   rate, GetClaimStats).

Each size, and the reference, gets a ticketing process of its own.

Reference, in the same run: agents as they were before the long poll, each
asking ClaimTicket without a wait every 0.5 s (--reference agents, default
200), and ticketing's CPU share then. Prints one JSON document with the
idle CPU per 1,000 agents of both and their ratio.

    python bench/fleet.py [--agents 500,2000,5000] [--reference 200] [--window 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarm_ticketing.server import migrate
from swarmcommon.localproc import free_port, start_service

LOCAL_POSTGRES = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test"
WAIT = 60.0
R = TypeVar("R")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(seconds=seconds))
    return d


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


async def cpu_share(pid: int, window: float) -> float:
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(window)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


@dataclass
class Fleet:
    """N agents of one tenant: each claims (waiting), submits what it got, and again."""

    target: str
    tenant: str
    claims: dict[str, float] = field(default_factory=dict)  # ticket name -> when its claim arrived
    submitted: dict[str, float] = field(default_factory=dict)  # ticket name -> when its submit was sent
    # Ticket name -> the future `claimed` waits on.
    expected: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    async def agent(self, i: int, wait: float | None) -> None:
        # Its own connection, as each VM has (channels to one target share one by default).
        ch = grpc.aio.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool", 1)])
        self.channels.append(ch)
        stub = pb_grpc.TicketingServiceStub(ch)
        first = True
        while True:
            this_wait = random.uniform(1, WAIT) if first and wait else wait
            first = False
            request = pb.ClaimTicketRequest(
                tenant_id=self.tenant,
                agent_id=f"agent-{i}",
                wait_duration=duration(this_wait) if this_wait else None,
            )
            reply = await stub.ClaimTicket(request, timeout=(this_wait or 0) + 20)
            if not reply.HasField("ticket"):
                if wait is None:
                    await asyncio.sleep(0.5)  # the reference: poll, sleep, poll
                continue
            name = reply.ticket.name
            self.claims[name] = time.perf_counter()
            waiting = self.expected.pop(name, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(self.claims[name])
            self.submitted[name] = time.perf_counter()
            await stub.SubmitWork(
                pb.SubmitWorkRequest(
                    tenant_id=self.tenant, ticket_id=reply.ticket.id, claim_token=reply.lease.claim_token
                )
            )

    def start(self, n: int, wait: float | None) -> None:
        self.tasks = [asyncio.create_task(self.agent(i, wait)) for i in range(n)]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(ch.close() for ch in self.channels))

    async def claimed(self, name: str, timeout: float = 10) -> float:
        """When the claim of ticket `name` reached its agent."""
        if name in self.claims:
            return self.claims[name]
        arrival = self.expected.setdefault(name, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(arrival, timeout)
        except TimeoutError:
            raise RuntimeError(f"ticket {name} not claimed within {timeout}s") from None


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.2)


async def measure(admin: Any, pid: int, fleet: Fleet, n: int, window: float, hops: int) -> dict[str, Any]:
    rss_before = rss_bytes(pid)
    fleet.start(n, WAIT)

    async def all_parked() -> bool:
        parked = int((await admin.GetClaimStats(pb.GetClaimStatsRequest())).parked_pollers)
        failed = [t for t in fleet.tasks if t.done()]
        if failed:
            raise RuntimeError(f"{len(failed)} agents stopped: {failed[0].exception()!r}")
        return parked >= n

    await until(all_parked, 120, f"{n} agents parked")
    await asyncio.sleep(1)
    idle = await cpu_share(pid, window)
    per_agent = (rss_bytes(pid) - rss_before) / n
    before = await admin.GetClaimStats(pb.GetClaimStatsRequest())

    ready: list[float] = []
    for i in range(hops * 2):
        name = f"n{n}-single-{i}"
        sent = time.perf_counter()
        await admin.CreateProject(
            pb.CreateProjectRequest(
                tenant_id=fleet.tenant, name=name, tickets=[pb.TicketSpec(key="k", name=name)]
            )
        )
        ready.append((await fleet.claimed(name)) - sent)

    hop: list[float] = []
    for i in range(hops):
        parent, child = f"n{n}-parent-{i}", f"n{n}-child-{i}"
        await admin.CreateProject(
            pb.CreateProjectRequest(
                tenant_id=fleet.tenant,
                name=parent,
                tickets=[
                    pb.TicketSpec(key="p", name=parent),
                    pb.TicketSpec(key="c", name=child, depends_on=["p"]),
                ],
            )
        )
        arrived = await fleet.claimed(child)
        hop.append(arrived - fleet.submitted[parent])

    after = await admin.GetClaimStats(pb.GetClaimStatsRequest())
    sync = after.sync_matched_claims - before.sync_matched_claims
    backlog = after.backlog_claims - before.backlog_claims
    await fleet.stop()
    return {
        "agents": n,
        "idle_cpu_cores": round(idle, 4),
        "idle_cpu_cores_per_1000_agents": round(idle / n * 1000, 4),
        "server_memory_per_parked_agent_kib": round(per_agent / 1024, 1),
        # The server's own clock: from the commit that made a ticket ready
        # to its claim, over every claim at this size (phases 2 and 3).
        "ready_to_claimed_ms": {
            "p50": round(after.ready_to_claimed_p50_ms, 2),
            "p99": round(after.ready_to_claimed_p99_ms, 2),
        },
        # End to end, from this process: the CreateProject sent to the claim
        # arriving at its agent (includes the create's own round trip).
        "create_sent_to_claim_received_ms": {
            "p50": round(percentile(ready, 0.5) * 1000, 2),
            "p99": round(percentile(ready, 0.99) * 1000, 2),
            "mean": round(statistics.fmean(ready) * 1000, 2),
            "tickets": len(ready),
        },
        "dag_hop_ms": {
            "p50": round(percentile(hop, 0.5) * 1000, 2),
            "p99": round(percentile(hop, 0.99) * 1000, 2),
            "hops": len(hop),
        },
        "sync_match_rate": round(sync / (sync + backlog), 4) if sync + backlog else None,
    }


async def reference(pid: int, target: str, n: int, window: float) -> dict[str, Any]:
    fleet = Fleet(target, f"bench-ref-{uuid.uuid4().hex[:6]}")
    fleet.start(n, None)
    await asyncio.sleep(3)
    idle = await cpu_share(pid, window)
    await fleet.stop()
    return {
        "agents": n,
        "poll_interval_s": 0.5,
        "idle_cpu_cores": round(idle, 4),
        "idle_cpu_cores_per_1000_agents": round(idle / n * 1000, 4),
    }


def start_ticketing(database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    return start_service(
        "swarm_ticketing",
        "SWARM_TICKETING_",
        {
            "DATABASE_URL": database_url,
            "INSECURE_DEV": "true",
            "MIGRATE_ON_START": "false",
            "REAPER_INTERVAL_SECONDS": "0",
            "LOG_LEVEL": "WARNING",
        },
        target=f"127.0.0.1:{free_port()}",
    )


async def with_ticketing(database_url: str, body: Callable[[Any, int, str], Awaitable[R]]) -> R:
    """`body(admin stub, pid, target)` against a ticketing process of its own."""
    proc, target = start_ticketing(database_url)
    admin_channel = grpc.aio.insecure_channel(target)
    try:
        return await body(pb_grpc.TicketingServiceStub(admin_channel), proc.pid, target)
    finally:
        await admin_channel.close()
        proc.terminate()
        proc.wait(timeout=30)


async def run(
    database_url: str, sizes: list[int], ref_agents: int, window: float, hops: int
) -> dict[str, Any]:
    results = []
    for n in sizes:
        tenant = f"bench-fleet-{n}-{uuid.uuid4().hex[:6]}"

        async def at_size(
            admin: Any, pid: int, target: str, n: int = n, tenant: str = tenant
        ) -> dict[str, Any]:
            return await measure(admin, pid, Fleet(target, tenant), n, window, hops)

        results.append(await with_ticketing(database_url, at_size))
    ref = await with_ticketing(
        database_url, lambda admin, pid, target: reference(pid, target, ref_agents, min(window, 15))
    )
    long_poll = results[0]["idle_cpu_cores_per_1000_agents"]
    return {
        "benchmark": "fleet",
        "database": "postgresql",
        "long_poll": results,
        "reference_short_poll": ref,
        "idle_cpu_per_agent_ratio_short_poll_over_long_poll": round(
            ref["idle_cpu_cores_per_1000_agents"] / long_poll, 1
        )
        if long_poll
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="500,2000,5000")
    parser.add_argument("--reference", type=int, default=200)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--hops", type=int, default=100)
    parser.add_argument("--database-url", default=os.environ.get("SWARM_TEST_POSTGRES_URL", LOCAL_POSTGRES))
    args = parser.parse_args()
    migrate(args.database_url)
    os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    sizes = [int(n) for n in args.agents.split(",")]
    result = asyncio.run(run(args.database_url, sizes, args.reference, args.window, args.hops))
    print(json.dumps(result, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
