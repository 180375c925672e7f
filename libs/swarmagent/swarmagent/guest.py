"""python -m swarmagent.guest: the program an agent VM runs.

Its configuration comes from the environment vmhost gives it
(SWARM_AGENT_ID, SWARM_TENANT_ID, SWARM_AGENT_ROLE, SWARM_VMHOST_TARGET,
SWARM_TICKETING_TARGET, SWARM_AGENT_WORK=module:function, and its
credentials SWARM_AGENT_TOKEN and SWARM_AGENT_CA_FILE: see
swarmagent.credentials). It heartbeats vmhost (READY, or BUSY with the
ticket it works on) at the interval vmhost answers with, takes the renewed
token each answer carries, and works tickets with the agent loop. When
vmhost says the agent is gone (FAILED_PRECONDITION: its leases were
released; UNAUTHENTICATED: its token was revoked or expired) it stops.
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
from swarmagent.agent import close_work, load_work
from swarmagent.client import ClaimedTicket, TicketingClient
from swarmagent.credentials import AgentCredentials, export_spans
from swarmagent.credentials import current as agent_credentials
from swarmagent.loop import AgentLoop
from swarmcommon.clients import VmHostClient
from swarmcommon.errors import SwarmError
from swarmcommon.logs import configure_logging
from swarmcommon.periodic import Periodic
from swarmcommon.telemetry import setup_tracing, shutdown_tracing

log = logging.getLogger("swarmagent.guest")

# vmhost's answers meaning "this agent no longer exists here": stop. A
# refused token cannot be renewed either (only a heartbeat renews it).
GONE = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED)


class Heartbeat(Periodic):
    """READY or BUSY to vmhost, at the interval vmhost answers with."""

    name = "heartbeat"

    def __init__(
        self,
        target: str,
        tenant_id: str,
        agent_id: str,
        interval: float,
        credentials: AgentCredentials | None = None,
    ) -> None:
        super().__init__(interval)
        self.credentials = credentials or AgentCredentials()
        self.vmhost = VmHostClient(target, **self.credentials.channel("vmhost"))
        self.tenant_id, self.agent_id = tenant_id, agent_id
        self.ticket_id = ""
        self.gone = threading.Event()

    def beat(self) -> None:
        state = vpb.AGENT_STATE_BUSY if self.ticket_id else vpb.AGENT_STATE_READY
        try:
            reply = self.vmhost.heartbeat(self.tenant_id, self.agent_id, state, self.ticket_id)
        except SwarmError as exc:
            if exc.code in GONE:
                log.warning("vmhost says this agent is gone; stopping", extra={"detail": exc.message})
                self.gone.set()
            else:
                # Not a backoff: a guest silent for a few intervals is replaced.
                log.warning("heartbeat failed; retrying", extra={"code": exc.code.name})
            return
        self.credentials.renew(reply.agent_token)
        self.interval = max(0.1, reply.heartbeat_interval.ToTimedelta().total_seconds())

    def run_once(self) -> None:
        self.beat()
        if self.gone.is_set():
            self.stop()

    def stop(self) -> None:
        super().stop()
        self.vmhost.close()


def main() -> int:
    # HOME is the guest's own working directory, never the host's (vmhost
    # passes none; without one, tools fall back to the passwd entry's).
    os.environ["HOME"] = os.getcwd()
    env = os.environ
    agent_id, tenant_id = env["SWARM_AGENT_ID"], env["SWARM_TENANT_ID"]
    os.environ.setdefault(
        "OTEL_RESOURCE_ATTRIBUTES", f"swarm.agent_id={agent_id},swarm.tenant_id={tenant_id}"
    )
    configure_logging("swarm-agent", env.get("SWARM_AGENT_LOG_LEVEL", "INFO"))
    credentials = agent_credentials()
    export_spans(setup_tracing("swarm-agent"), env.get("SWARM_TELEMETRY_TARGET", ""), credentials)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    heart = Heartbeat(
        env["SWARM_VMHOST_TARGET"],
        tenant_id,
        agent_id,
        float(env.get("SWARM_AGENT_HEARTBEAT_SECONDS", "5")),
        credentials,
    )
    heart.beat()  # READY as soon as the guest runs
    heart.start()

    def stop_when_gone() -> None:
        heart.gone.wait()
        stop.set()

    threading.Thread(target=stop_when_gone, name="gone", daemon=True).start()
    work_spec = env.get("SWARM_AGENT_WORK", "")
    try:
        if not work_spec:
            stop.wait()  # an idle sandbox: heartbeats only
            return 0
        work = load_work(work_spec)

        def on_event(kind: str, claimed: ClaimedTicket, detail: str) -> None:
            heart.ticket_id = claimed.id if kind == "started" else ""
            if kind == "started":
                heart.beat()  # BUSY now, not at the next interval

        role = tpb.AgentRole.Value("AGENT_ROLE_" + env.get("SWARM_AGENT_ROLE", "coder").upper())
        client = TicketingClient(env["SWARM_TICKETING_TARGET"], tenant_id, agent_id, credentials=credentials)
        loop = AgentLoop(client, work, role=role, heartbeat_interval=20, idle_wait=0.3, on_event=on_event)
        try:
            loop.run(stop)
        finally:
            client.close()
            close_work(work)  # e.g. the usage records the ledger has not taken yet
        return 0
    finally:
        stop.set()
        heart.stop()
        shutdown_tracing()


if __name__ == "__main__":
    sys.exit(main())
