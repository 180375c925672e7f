"""python -m swarmagent.agent: one agent process working tickets over gRPC.

    python -m swarmagent.agent --ticketing 127.0.0.1:50051 --tenant acme \\
        --agent-id coder-1 --role coder --work mypkg.work:run [--max-tickets N]

`--work` names the function that does a ticket's stage (`module:function`,
taking a ClaimedTicket and returning the result dict, raising WorkFailed).
Spans go wherever OTEL_EXPORTER_OTLP_ENDPOINT says, under the service name
`swarm-agent` with `swarm.agent_id` on the resource, and join each ticket's
trace through the trace context that comes with its lease.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from datetime import timedelta

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmagent.client import ClaimedTicket, TicketingClient
from swarmagent.credentials import current as agent_credentials
from swarmagent.loop import AgentLoop, Work
from swarmcommon.logs import configure_logging
from swarmcommon.telemetry import setup_tracing, shutdown_tracing


def load_work(spec: str) -> Work:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SystemExit(f"--work: expected module:function, got {spec!r}")
    fn: Work = getattr(importlib.import_module(module), name)
    return fn


def close_work(work: Work) -> None:
    """Let work that holds resources for the agent's lifetime (a `close()`
    method, like swarmagent.runtime:work's usage records) finish with them."""
    close = getattr(work, "close", None)
    if callable(close):
        close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swarmagent.agent", description=__doc__.split("\n")[0])
    parser.add_argument("--ticketing", required=True, help="ticketing service host:port")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--agent-id", required=True)
    parser.add_argument(
        "--role",
        default="coder",
        choices=[r.removeprefix("AGENT_ROLE_").lower() for r in pb.AgentRole.keys()[1:]],
    )
    parser.add_argument("--work", required=True, help="module:function doing one ticket stage")
    parser.add_argument(
        "--max-tickets", type=int, default=0, help="stop after this many tickets (0: run until SIGTERM)"
    )
    parser.add_argument("--lease-seconds", type=float, default=60.0)
    parser.add_argument("--heartbeat-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)

    attributes = f"swarm.agent_id={args.agent_id},swarm.tenant_id={args.tenant}"
    existing = os.environ.get("OTEL_RESOURCE_ATTRIBUTES")
    os.environ["OTEL_RESOURCE_ATTRIBUTES"] = f"{existing},{attributes}" if existing else attributes
    configure_logging("swarm-agent", os.environ.get("SWARM_AGENT_LOG_LEVEL", "INFO"))
    setup_tracing("swarm-agent")
    work = load_work(args.work)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    done = 0

    def on_event(kind: str, claimed: ClaimedTicket, detail: str) -> None:
        nonlocal done
        if kind in ("submitted", "failed", "quarantined", "lease_lost"):
            done += 1
            if args.max_tickets and done >= args.max_tickets:
                stop.set()

    client = TicketingClient(
        args.ticketing,
        args.tenant,
        args.agent_id,
        lease=timedelta(seconds=args.lease_seconds),
        # SWARM_AGENT_TOKEN / SWARM_AGENT_CA_FILE when given: TLS and the token on every call.
        credentials=agent_credentials(),
    )
    role = pb.AgentRole.Value("AGENT_ROLE_" + args.role.upper())
    try:
        AgentLoop(
            client,
            work,
            role=role,
            heartbeat_interval=args.heartbeat_seconds,
            idle_wait=0.2,
            on_event=on_event,
        ).run(stop)
    finally:
        client.close()
        close_work(work)
        shutdown_tracing()  # flush spans before leaving
    return 0


if __name__ == "__main__":
    sys.exit(main())
