"""The agent lifecycle: spawn (request id, address, quota, driver) and
terminate (guest, leases, reservation, address).

vmhost calls quota (max_vms reservations) and ticketing (lease release)
only through their swarmcommon clients: every call has a deadline and fails
as a SwarmError, which passes through to our own callers unchanged (e.g.
quota's RESOURCE_EXHAUSTED with its details).

Every step can be cut short by a crash, so each is safe to run again: the
agent row is written before quota is asked (a reservation's owner names a
row that exists), reservations are reserved and released with request ids,
and an agent records when it holds no reservation any more. What a crash
leaves behind (an agent stuck STOPPING or FAILED, a spawn that never
finished, a reservation not yet given back) is finished by `reconcile.py`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from swarm_vmhost.config import Settings
from swarm_vmhost.credentials import AgentCredentials
from swarm_vmhost.domain import (
    Agent,
    AgentState,
    DriverName,
    GuestHandle,
    GuestSpec,
    Heartbeat,
    SpawnRequest,
    TerminateRequest,
    spawn_conflict,
    terminate_conflict,
)
from swarm_vmhost.drivers.base import GuestDriver, ReadiesAhead, guest_identity, recycled, with_start_time
from swarm_vmhost.guests import guest_command, guest_env
from swarm_vmhost.network import Bridge
from swarm_vmhost.stores import AgentStore
from swarmcommon.clients import QuotaClient, TicketingClient
from swarmcommon.errors import FailedPrecondition, InvalidArgument, SwarmError

log = logging.getLogger(__name__)

# Tried in this order when no default driver is configured: the strongest
# isolation this host can run.
PREFERRED_DRIVERS = (DriverName.GVISOR, DriverName.NETNS, DriverName.PROCESS)
# Quota's answers to a Reserve it refused outright: nothing was reserved.
# Any other failure (no answer, a deadline) may come after quota committed.
REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


def reservation_owner(agent_id: str) -> str:
    """Who holds an agent's max_vms reservation, as quota lists it."""
    return f"vmhost/agents/{agent_id}"


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
        # Agents a spawn or a terminate in this process is working on: the
        # reconciler leaves them alone.
        self._spawning: Counter[str] = Counter()
        self._stopping: Counter[str] = Counter()
        self._busy_lock = threading.Lock()

    @contextmanager
    def _working_on(self, work: Counter[str], agent_id: str) -> Iterator[None]:
        with self._busy_lock:
            work[agent_id] += 1
        try:
            yield
        finally:
            with self._busy_lock:
                work[agent_id] -= 1
                if not work[agent_id]:
                    del work[agent_id]

    def busy(self, agent_id: str) -> bool:
        """Whether a spawn or terminate in this process is working on the agent."""
        with self._busy_lock:
            return agent_id in self._spawning or agent_id in self._stopping

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
        # A guest readied ahead names the agent: its address is held under that id.
        ahead = driver if isinstance(driver, ReadiesAhead) else None
        ready = ahead.take_ready() if ahead is not None else None
        agent_id = ready or str(uuid.uuid4())
        handed_over = False
        try:
            with self._working_on(self._spawning, agent_id):
                # The row comes first: it claims the request id (a unique index), so a
                # concurrent retry finds this agent before anything is reserved for it,
                # and a reservation quota holds always names an agent vmhost knows.
                agent, created = self.agents.create(agent_id, request, driver.name, replaces)
                if not created:
                    spawn_conflict(agent, request, self.default_driver)
                    return agent
                agent = self._reserve(agent, ahead if ready else None)
                handed_over = True  # the driver starts (or removes) the ready guest
                return self._start(agent, driver)
        finally:
            if ahead is not None and ready and not handed_over:
                ahead.give_back_ready(ready)  # unless _reserve discarded it

    def _reserve(self, agent: Agent, ready: ReadiesAhead | None = None) -> Agent:
        """One of the tenant's max_vms held for the agent. Refused: nothing is
        left (a guest readied ahead, `ready`'s, keeps its address for the next
        spawn). Failed otherwise: the agent ends, its ready guest is removed,
        and its reservation (if quota made one) is given back now or by the
        reconciler."""
        if self.quota is None:
            return agent
        try:
            reservation = self.quota.reserve_vm(
                agent.tenant_id, owner=reservation_owner(agent.id), request_id=f"spawn:{agent.id}"
            )
        except SwarmError as exc:
            if exc.code in REFUSALS:
                self.agents.discard(agent.id, keep_address=ready is not None)
            else:
                if ready is not None:
                    ready.discard_ready(agent.id)
                settled = self.settle_reservation(agent)
                self.agents.start_failed(agent.id, f"quota did not answer: {exc.message}", settled)
            raise
        try:
            return self.agents.reserved(agent.id, reservation)
        except BaseException:
            if ready is not None:
                ready.discard_ready(agent.id)
            # Unrecorded: give it back now, or leave the row for the reconciler to find it by owner.
            if self._release(agent.tenant_id, agent.id, reservation):
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
            handle = with_start_time(driver.start(spec))
        except BaseException as exc:
            settled = self.settle_reservation(agent)
            self.agents.start_failed(agent.id, f"failed to start: {exc}", settled)
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
        """Stop the guest, give back its leases, reservation and address.
        Idempotent: a crash anywhere in it leaves the agent STOPPING (or
        FAILED), and running it again finishes the job."""
        with self._working_on(self._stopping, agent.id):
            if agent.state == AgentState.TERMINATED:
                if request is not None and request.request_id:
                    return Termination(self.agents.terminated(agent.id, reason, request))
                return Termination(agent)
            self.agents.stopping(agent.id, reason)
            if agent.handle is not None:
                self.stop_guest(agent.driver, agent.handle)
            released, error = self._release_leases(agent, reason)
            settled = self.settle_reservation(agent)
            done = self.agents.terminated(agent.id, reason, request, reservation_settled=settled)
            return Termination(done, released, error)

    def abandon(self, agent: Agent, reason: str) -> Agent:
        """End a spawn that never finished (vmhost stopped during it): whatever
        the driver made for it removed, its reservation given back, the agent
        TERMINATED with its request id freed (a retry spawns anew)."""
        with self._working_on(self._stopping, agent.id):
            self.stop_guest(agent.driver, agent.handle or GuestHandle(agent.id, agent.driver))
            settled = self.settle_reservation(agent)
            return self.agents.start_failed(agent.id, reason, settled)

    def stop_guest(self, driver: DriverName, handle: GuestHandle) -> None:
        """The driver stops the guest and removes its devices; a pid that now
        names another process is withheld from it (nothing is signalled)."""
        if driver in self.drivers:
            self.drivers[driver].stop(guest_identity(handle))

    @staticmethod
    def guest_alive(driver: GuestDriver, handle: GuestHandle) -> bool:
        """Whether the guest still runs: a pid now naming another process is gone."""
        return not recycled(handle) and driver.alive(handle)

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

    def settle_reservation(self, agent: Agent) -> bool:
        """Give back whatever max_vms reservation `agent` holds; True once it
        holds none. One whose id was never recorded (vmhost stopped between
        quota's answer and the write) is found by its owner. Releasing twice
        changes nothing in quota (and carries the same request id)."""
        if self.quota is None:
            return True
        if agent.reservation_id:
            return self._release(agent.tenant_id, agent.id, agent.reservation_id)
        try:
            held = self.quota.vm_reservations(agent.tenant_id, reservation_owner(agent.id))
        except SwarmError as exc:
            return self._unreleased(agent.id, exc)
        return all([self._release(agent.tenant_id, agent.id, r) for r in held])

    def _release(self, tenant_id: str, agent_id: str, reservation_id: str) -> bool:
        if self.quota is None:
            return True
        try:
            self.quota.release(tenant_id, reservation_id, request_id=f"release:{reservation_id}")
        except SwarmError as exc:  # the guest is gone either way; the reconciler retries
            return self._unreleased(agent_id, exc)
        return True

    @staticmethod
    def _unreleased(agent_id: str, exc: SwarmError) -> bool:
        if exc.code == grpc.StatusCode.NOT_FOUND:  # no such tenant or reservation: nothing is held
            return True
        log.warning("reservation not released", extra={"agent_id": agent_id, "error": exc.message})
        return False

    def close(self) -> None:
        for client in (self.quota, self.ticketing):
            if client is not None:
                client.close()
