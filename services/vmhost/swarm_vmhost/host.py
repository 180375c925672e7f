"""The agent lifecycle: spawn (request id, address, quota, driver) and
terminate (guest, leases, reservation, address).

vmhost calls quota (max_vms reservations) and ticketing (lease release)
only through their swarmcommon clients: every call has a deadline and fails
as a SwarmError, which passes through to our own callers unchanged (e.g.
quota's RESOURCE_EXHAUSTED with its details).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from swarm_vmhost.config import Settings
from swarm_vmhost.credentials import AgentCredentials
from swarm_vmhost.domain import (
    Agent,
    AgentState,
    DriverName,
    GuestSpec,
    Heartbeat,
    SpawnRequest,
    TerminateRequest,
    spawn_conflict,
    terminate_conflict,
)
from swarm_vmhost.drivers.base import GuestDriver
from swarm_vmhost.guests import guest_command, guest_env
from swarm_vmhost.network import Bridge
from swarm_vmhost.stores import AgentStore
from swarmcommon.clients import QuotaClient, TicketingClient
from swarmcommon.errors import FailedPrecondition, InvalidArgument, SwarmError

log = logging.getLogger(__name__)

# Tried in this order when no default driver is configured: the strongest
# isolation this host can run.
PREFERRED_DRIVERS = (DriverName.NETNS, DriverName.PROCESS)


@dataclass(frozen=True)
class Termination:
    agent: Agent
    released_ticket_ids: list[str] = field(default_factory=list)
    # Why ticketing could not take the leases back (its reaper will, when they lapse).
    release_error: str = ""


class VmHost:
    def __init__(
        self,
        settings: Settings,
        agents: AgentStore,
        drivers: Mapping[DriverName, GuestDriver],
        bridge: Bridge,
        quota: QuotaClient | None,
        ticketing: TicketingClient | None,
        own_target: str = "",
        credentials: AgentCredentials | None = None,
    ) -> None:
        self.settings = settings
        self.agents = agents
        self.drivers = dict(drivers)
        self.bridge = bridge
        self.quota = quota
        self.ticketing = ticketing
        # vmhost's own port for guests (its agent port; its mesh port in insecure dev mode).
        self.own_target = own_target
        self.credentials = credentials or AgentCredentials(None)
        self.default_driver = self._default_driver()

    def _default_driver(self) -> DriverName:
        for name, driver in self.drivers.items():
            why = driver.probe()
            if why is not None:  # said once at start-up, and by ListDrivers
                log.warning("driver unavailable on this host", extra={"driver": name, "reason": why})
        if self.settings.default_driver:
            return DriverName(self.settings.default_driver)
        usable = (n for n in PREFERRED_DRIVERS if n in self.drivers and self.drivers[n].probe() is None)
        return next(usable, DriverName.PROCESS)

    def driver(self, name: DriverName | None) -> GuestDriver:
        name = name or self.default_driver
        if name not in self.drivers:
            raise InvalidArgument(
                "driver", f"unknown driver {name!r}; this host has {', '.join(self.drivers)}"
            )
        why = self.drivers[name].probe()
        if why is not None:
            raise FailedPrecondition(
                f"driver {name} cannot run on this host: {why}", reason="DRIVER_UNAVAILABLE"
            )
        return self.drivers[name]

    # -- spawn ------------------------------------------------------------------------------------

    def spawn(self, request: SpawnRequest, replaces: str | None = None) -> Agent:
        """A STARTING agent with a reservation, an address and a running guest.
        A request id already used returns its agent and writes nothing."""
        if request.request_id:
            prior = self.agents.by_request(request.tenant_id, request.request_id)
            if prior is not None:
                spawn_conflict(prior, request, self.default_driver)
                return prior
        driver = self.driver(request.driver)
        # The row comes first: it claims the request id (a unique index), so a
        # concurrent retry finds this agent before anything is reserved for it.
        agent, created = self.agents.create(str(uuid.uuid4()), request, driver.name, replaces)
        if not created:
            spawn_conflict(agent, request, self.default_driver)
            return agent
        return self._start(self._reserve(agent), driver)

    def _reserve(self, agent: Agent) -> Agent:
        """One of the tenant's max_vms held for the agent; on refusal nothing is left."""
        if self.quota is None:
            return agent
        try:
            reservation = self.quota.reserve_vm(
                agent.tenant_id, owner=f"vmhost/agents/{agent.id}", request_id=f"spawn:{agent.id}"
            )
        except BaseException:
            self.agents.discard(agent.id)
            raise
        try:
            return self.agents.reserved(agent.id, reservation)
        except BaseException:
            self._release_reservation(agent.tenant_id, agent.id, reservation)
            self.agents.discard(agent.id)
            raise

    def _start(self, agent: Agent, driver: GuestDriver) -> Agent:
        spec = GuestSpec(
            agent_id=agent.id,
            tenant_id=agent.tenant_id,
            template=agent.template,
            role=agent.role,
            address=agent.address or "",
            prefix_len=self.bridge.prefix_len,
            gateway=self.bridge.address,
            bridge=self.bridge.name,
            env=guest_env(
                self.settings,
                agent,
                self.bridge,
                driver.isolated,
                self.own_target,
                self.credentials.guest_env(agent),
            ),
            command=guest_command(self.settings),
            workdir=str((Path(self.settings.workroot) / "guests" / agent.id).resolve()),
        )
        try:
            handle = driver.start(spec)
        except BaseException as exc:
            self.agents.start_failed(agent.id, f"failed to start: {exc}")
            self._release_reservation(agent.tenant_id, agent.id, agent.reservation_id)
            raise
        log.info(
            "agent spawned", extra={"agent_id": agent.id, "tenant_id": agent.tenant_id, "driver": driver.name}
        )
        started = self.agents.started(agent.id, handle)
        if not driver.guest_heartbeats:  # up means ready (vmhost watches its process)
            started = self.agents.heartbeat(Heartbeat(agent.tenant_id, agent.id, AgentState.READY, None))
        return started

    # -- terminate --------------------------------------------------------------------------------

    def terminate_request(self, request: TerminateRequest) -> Agent:
        """TerminateAgent: a request id already used replays its answer."""
        agent = self.agents.get(request.tenant_id, request.agent_id)
        if request.request_id:
            first = self.agents.terminate_request(request.tenant_id, request.request_id)
            if first is not None:
                terminate_conflict(first, request)
                return agent  # terminated for good: the first answer
        return self.terminate(agent, request.reason, request).agent

    def terminate(self, agent: Agent, reason: str, request: TerminateRequest | None = None) -> Termination:
        """Stop the guest, give back its leases, reservation and address. Idempotent."""
        if agent.state == AgentState.TERMINATED:
            if request is not None and request.request_id:
                return Termination(self.agents.terminated(agent.id, reason, request))
            return Termination(agent)
        self.agents.stopping(agent.id, reason)
        if agent.handle is not None and agent.driver in self.drivers:
            self.drivers[agent.driver].stop(agent.handle)
        released, error = self._release_leases(agent, reason)
        self._release_reservation(agent.tenant_id, agent.id, agent.reservation_id)
        return Termination(self.agents.terminated(agent.id, reason, request), released, error)

    def _release_leases(self, agent: Agent, reason: str) -> tuple[list[str], str]:
        if self.ticketing is None:
            return [], ""
        try:
            released, quarantined = self.ticketing.release_agent_claims(
                agent.tenant_id, agent.id, reason, request_id=f"release:{agent.id}"
            )
        except SwarmError as exc:  # the reaper still returns them when their leases lapse
            log.warning("lease release failed", extra={"agent_id": agent.id, "error": exc.message})
            return [], exc.message
        return released + quarantined, ""

    def _release_reservation(self, tenant_id: str, agent_id: str, reservation_id: str | None) -> None:
        if self.quota is None or not reservation_id:
            return
        try:
            self.quota.release(tenant_id, reservation_id, request_id=f"release:{reservation_id}")
        except SwarmError as exc:  # the guest is gone either way; quota lists the reservation for reconciling
            log.warning("reservation not released", extra={"agent_id": agent_id, "error": exc.message})

    def close(self) -> None:
        for client in (self.quota, self.ticketing):
            if client is not None:
                client.close()
