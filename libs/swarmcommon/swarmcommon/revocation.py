"""Revoked agents, as vmhost lists them: what makes a terminated agent's
token stop working before it expires.

vmhost revokes an agent's tokens when the agent leaves the live states
(failed, stopping, terminated). A service that accepts agent tokens keeps a
copy of the list, polled every second or so from vmhost's
ListRevokedAgents, and hands it to its token verifier:

    revocations = revocation_list(settings.vmhost_target, settings)   # None without vmhost
    security = ServerSecurity.from_settings(settings, agent_tokens=True, revoked=revoked(revocations))
    start_revocations(revocations)
    ...
    revocations.stop()

Each poll asks for revocations since the newest one already seen, less an
overlap (a transaction may commit after a later one did); vmhost answers
with every revocation a still-valid token could need on the first poll. An
entry is forgotten once every token of its agent has expired (vmhost says
how long that is). Agent ids are never reused, so any token of a listed
agent is refused.

When vmhost cannot be reached the last list is kept (and the failure logged
with backoff): a token then works until it expires or vmhost answers again.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm.vmhost.v1 import vmhost_pb2_grpc as pb_grpc
from swarmcommon.agenttoken import AgentClaims, Revoked
from swarmcommon.clients.channel import ServiceChannel
from swarmcommon.clock import Clock, SystemClock
from swarmcommon.periodic import Periodic
from swarmcommon.security import client_tls
from swarmcommon.settings import ServiceSettings
from swarmcommon.tls import ClientTls

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 1.0
# How far back each poll looks before the newest revocation it has seen.
OVERLAP = timedelta(seconds=30)


class RevocationList(Periodic):
    name = "agent-revocations"

    def __init__(
        self,
        vmhost_target: str,
        *,
        tls: ClientTls | None = None,
        interval: float = DEFAULT_INTERVAL,
        timeout: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(interval, max_backoff=max(interval, 10.0))
        self.channel = ServiceChannel(vmhost_target, default_timeout=timeout, tls=tls)
        self.stub = pb_grpc.VmHostServiceStub(self.channel.unary)
        self.clock = clock or SystemClock()
        self._list_lock = threading.Lock()
        self._revoked: dict[str, datetime] = {}  # agent id -> when it was revoked
        self._newest: datetime | None = None
        self._retention = timedelta(0)
        # Set once vmhost has answered (health checks and tests wait on it).
        self.synced = threading.Event()

    def revoked(self, claims: AgentClaims) -> bool:
        """The TokenVerifier's `revoked` check."""
        with self._list_lock:
            return claims.agent_id in self._revoked

    def __len__(self) -> int:
        with self._list_lock:
            return len(self._revoked)

    def run_once(self) -> bool:
        request = pb.ListRevokedAgentsRequest()
        with self._list_lock:
            if self._newest is not None:
                request.start_time.FromDatetime(self._newest - OVERLAP)
        reply: pb.ListRevokedAgentsResponse = self.stub.ListRevokedAgents(request)
        now = self.clock.now()
        with self._list_lock:
            self._retention = reply.retention.ToTimedelta()
            for agent in reply.agents:
                at = agent.revoke_time.ToDatetime(tzinfo=UTC)
                if agent.agent_id not in self._revoked:
                    log.info("agent token revoked", extra={"agent_id": agent.agent_id})
                self._revoked[agent.agent_id] = max(at, self._revoked.get(agent.agent_id, at))
                self._newest = at if self._newest is None else max(self._newest, at)
            forget = now - self._retention - OVERLAP
            for agent_id in [a for a, at in self._revoked.items() if at < forget]:
                del self._revoked[agent_id]
        self.synced.set()
        return False

    def start(self) -> None:
        super().start()
        self.wake()  # the first poll now, not an interval from now

    def stop(self) -> None:
        super().stop()
        self.channel.close()


def revocation_list(vmhost_target: str, settings: ServiceSettings) -> RevocationList | None:
    """The revocation list of a service that accepts agent tokens, from the
    vmhost at `vmhost_target` (dialled with the service's own certificate);
    None without one, when tokens work until they expire."""
    if not vmhost_target:
        if settings.agent_token_public_keys:
            log.warning(
                "no vmhost target: a terminated agent's token works until it expires",
                extra={"setting": f"{settings.env_prefix()}VMHOST_TARGET"},
            )
        return None
    return RevocationList(vmhost_target, tls=client_tls(settings))


def revoked(revocations: RevocationList | None) -> Revoked | None:
    return revocations.revoked if revocations is not None else None


def start_revocations(revocations: RevocationList | None) -> None:
    if revocations is not None:
        revocations.start()
