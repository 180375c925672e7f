"""python -m swarmagent.guest: the program an agent VM runs.

Its configuration comes from the environment vmhost gives it
(SWARM_AGENT_ID, SWARM_TENANT_ID, SWARM_AGENT_ROLE, SWARM_VMHOST_TARGET,
SWARM_TICKETING_TARGET, SWARM_AGENT_WORK=module:function). It heartbeats
vmhost (READY, or BUSY with the ticket it works on) at the interval vmhost
answers with, and works tickets with the agent loop. When vmhost says the
agent is gone (FAILED_PRECONDITION: its leases were released) it stops.
Without SWARM_AGENT_WORK it only heartbeats (an idle sandbox).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm.vmhost.v1 import vmhost_pb2 as vpb
from swarm.vmhost.v1 import vmhost_pb2_grpc as vpb_grpc
from swarmagent.agent import load_work
from swarmagent.client import ClaimedTicket, TicketingClient
from swarmagent.loop import AgentLoop
from swarmcommon.grpcclient import channel
from swarmcommon.logs import configure_logging
from swarmcommon.telemetry import setup_tracing, shutdown_tracing

log = logging.getLogger("swarmagent.guest")


class Heartbeat:
    def __init__(self, target: str, tenant_id: str, agent_id: str, interval: float) -> None:
        self._channel = channel(target)
        self.stub = vpb_grpc.VmHostServiceStub(self._channel)
        self.tenant_id, self.agent_id = tenant_id, agent_id
        self.interval = interval
        self.ticket_id = ""
        self.gone = threading.Event()

    def beat(self) -> None:
        state = vpb.AGENT_STATE_BUSY if self.ticket_id else vpb.AGENT_STATE_READY
        try:
            reply = self.stub.Heartbeat(
                vpb.HeartbeatRequest(
                    tenant_id=self.tenant_id, agent_id=self.agent_id, ticket_id=self.ticket_id, state=state
                ),
                timeout=10,
            )
            self.interval = max(0.1, reply.heartbeat_interval.ToTimedelta().total_seconds())
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                log.warning("vmhost says this agent is gone; stopping", extra={"detail": exc.details()})
                self.gone.set()
            else:
                log.warning("heartbeat failed; retrying", extra={"code": exc.code().name})

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set() and not self.gone.is_set():
            self.beat()
            stop.wait(self.interval)

    def close(self) -> None:
        self._channel.close()


def main() -> int:
    env = os.environ
    agent_id, tenant_id = env["SWARM_AGENT_ID"], env["SWARM_TENANT_ID"]
    os.environ.setdefault(
        "OTEL_RESOURCE_ATTRIBUTES", f"swarm.agent_id={agent_id},swarm.tenant_id={tenant_id}"
    )
    configure_logging("swarm-agent", env.get("SWARM_AGENT_LOG_LEVEL", "INFO"))
    setup_tracing("swarm-agent")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    heart = Heartbeat(
        env["SWARM_VMHOST_TARGET"], tenant_id, agent_id, float(env.get("SWARM_AGENT_HEARTBEAT_SECONDS", "5"))
    )
    heart.beat()  # READY as soon as the guest runs
    beats = threading.Thread(target=heart.run, args=(stop,), name="heartbeat", daemon=True)
    beats.start()
    work_spec = env.get("SWARM_AGENT_WORK", "")
    try:
        if not work_spec:
            while not stop.is_set() and not heart.gone.is_set():
                stop.wait(0.5)
            return 0
        work = load_work(work_spec)

        def on_event(kind: str, claimed: ClaimedTicket, detail: str) -> None:
            heart.ticket_id = claimed.id if kind == "started" else ""
            if kind == "started":
                heart.beat()  # BUSY now, not at the next interval

        role = tpb.AgentRole.Value("AGENT_ROLE_" + env.get("SWARM_AGENT_ROLE", "coder").upper())
        client = TicketingClient(env["SWARM_TICKETING_TARGET"], tenant_id, agent_id)
        loop = AgentLoop(client, work, role=role, heartbeat_interval=20, idle_wait=0.3, on_event=on_event)

        def stop_when_gone() -> None:
            heart.gone.wait()
            stop.set()

        threading.Thread(target=stop_when_gone, daemon=True).start()
        loop.run(stop)
        client.close()
        return 0
    finally:
        stop.set()
        heart.close()
        shutdown_tracing()


if __name__ == "__main__":
    sys.exit(main())
