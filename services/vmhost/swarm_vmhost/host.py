"""The agent lifecycle: spawn (quota, address, driver), heartbeat, terminate,
and the clients vmhost needs (quota reservations, ticketing lease release)."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

import grpc
from sqlalchemy.exc import IntegrityError

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.quota.v1 import quota_pb2_grpc as qpb_grpc
from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm.ticketing.v1 import ticketing_pb2_grpc as tpb_grpc
from swarm_vmhost.config import Settings
from swarm_vmhost.drivers.base import GuestDriver, GuestSpec
from swarm_vmhost.network import Bridge
from swarm_vmhost.store import AgentRecord, AgentStore
from swarmcommon.errors import FailedPrecondition, InvalidArgument, SwarmError
from swarmcommon.grpcclient import channel, error_from_rpc

log = logging.getLogger(__name__)


class Quota:
    """max_vms reservations in the quota service (none configured: unlimited)."""

    def __init__(self, target: str, timeout: float = 10.0) -> None:
        self._channel = channel(target) if target else None
        self._stub = qpb_grpc.QuotaServiceStub(self._channel) if self._channel else None
        self.timeout = timeout

    def reserve(self, tenant_id: str, agent_id: str, request_id: str) -> str | None:
        if self._stub is None:
            return None
        try:
            reply = self._stub.Reserve(
                qpb.ReserveRequest(
                    tenant_id=tenant_id,
                    resource=qpb.RESOURCE_VMS,
                    amount=1,
                    owner=f"vmhost/agents/{agent_id}",
                    request_id=request_id,
                ),
                timeout=self.timeout,
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return str(reply.reservation.id)

    def release(self, tenant_id: str, reservation_id: str | None) -> None:
        if self._stub is None or not reservation_id:
            return
        try:
            self._stub.Release(
                qpb.ReleaseRequest(tenant_id=tenant_id, reservation_id=reservation_id), timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


class Tickets:
    """Lease release in ticketing for agents that are gone."""

    def __init__(self, target: str, timeout: float = 10.0) -> None:
        self._channel = channel(target) if target else None
        self._stub = tpb_grpc.TicketingServiceStub(self._channel) if self._channel else None
        self.timeout = timeout

    def release_agent(self, tenant_id: str, agent_id: str, reason: str) -> tuple[list[str], list[str]]:
        if self._stub is None:
            return [], []
        try:
            reply = self._stub.ReleaseAgentClaims(
                tpb.ReleaseAgentClaimsRequest(
                    tenant_id=tenant_id, agent_id=agent_id, reason=reason, request_id=f"release:{agent_id}"
                ),
                timeout=self.timeout,
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return list(reply.released_ticket_ids), list(reply.quarantined_ticket_ids)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


LOCAL_HOSTS = ("127.0.0.1", "0.0.0.0", "localhost", "[::1]", "[::]")


def guest_target(target: str, bridge: Bridge, isolated: bool) -> str:
    """How a guest reaches a service: one on this host (loopback or every
    address) through the bridge address when the guest has its own namespace
    (the host's loopback is not its loopback); any other host as given."""
    if not target or not isolated:
        return target
    host, _, port = target.rpartition(":")
    return f"{bridge.address}:{port}" if host in LOCAL_HOSTS else target


class VmHost:
    def __init__(
        self,
        settings: Settings,
        store: AgentStore,
        drivers: Mapping[str, GuestDriver],
        bridge: Bridge,
        quota: Quota,
        tickets: Tickets,
        own_target: str,
    ) -> None:
        self.settings = settings
        self.store = store
        self.drivers = dict(drivers)
        self.bridge = bridge
        self.quota = quota
        self.tickets = tickets
        self.own_target = own_target
        self.default_driver = settings.default_driver or next(
            (n for n in ("netns", "process") if n in self.drivers and self.drivers[n].probe() is None),
            "process",
        )

    def driver(self, name: str) -> GuestDriver:
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

    def _env(self, agent: AgentRecord, driver: GuestDriver) -> dict[str, str]:
        def t(target: str) -> str:
            return guest_target(target, self.bridge, driver.isolated)

        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONUNBUFFERED": "1",
            "SWARM_AGENT_ID": agent.id,
            "SWARM_TENANT_ID": agent.tenant_id,
            "SWARM_AGENT_ROLE": agent.role,
            "SWARM_AGENT_TEMPLATE": agent.template,
            "SWARM_AGENT_ADDRESS": agent.address or "",
            "SWARM_VMHOST_TARGET": t(self.own_target),
            "SWARM_TICKETING_TARGET": t(self.settings.ticketing_target),
            "SWARM_TELEMETRY_TARGET": t(self.settings.telemetry_target),
            "SWARM_AGENT_WORK": self.settings.guest_work,
            "SWARM_AGENT_HEARTBEAT_SECONDS": str(self.settings.heartbeat_interval_seconds),
        }
        if self.settings.telemetry_target:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{t(self.settings.telemetry_target)}"
            env["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
        # "{host}" in a value is the host as this guest reaches it.
        host_address = self.bridge.address if driver.isolated else "127.0.0.1"
        for item in self.settings.guest_env.split(";"):
            key, sep, value = item.partition("=")
            if sep and key.strip():
                env[key.strip()] = value.replace("{host}", host_address)
        for key in ("PYTHONPATH", "VIRTUAL_ENV", "HOME", "LANG"):
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    def _command(self) -> list[str]:
        parts = shlex.split(self.settings.guest_command)
        return [sys.executable, *parts[1:]] if parts and parts[0] == "python" else parts

    def spawn(
        self,
        tenant_id: str,
        template: str,
        role: str,
        driver_name: str,
        request_id: str | None,
        replaces: str | None = None,
    ) -> AgentRecord:
        if request_id:
            existing = self.store.by_request(tenant_id, request_id)
            if existing is not None:
                return existing
        driver = self.driver(driver_name)
        agent_id = str(uuid.uuid4())
        reservation = self.quota.reserve(tenant_id, agent_id, f"spawn:{request_id or agent_id}")
        try:
            agent = self.store.create(
                agent_id, tenant_id, template, role, driver.name, reservation, request_id, replaces
            )
        except IntegrityError:
            existing = self.store.by_request(tenant_id, request_id) if request_id else None
            if existing is not None:
                return existing  # a concurrent retry won; the reservation (same request id) is its
            self.quota.release(tenant_id, reservation)
            raise
        except BaseException:
            self.quota.release(tenant_id, reservation)
            raise
        workdir = Path(self.settings.workroot) / "guests" / agent_id
        spec = GuestSpec(
            agent_id=agent_id,
            tenant_id=tenant_id,
            template=template,
            role=role,
            address=agent.address or "",
            prefix_len=self.bridge.prefix_len,
            gateway=self.bridge.address,
            bridge=self.bridge.name,
            env=self._env(agent, driver),
            command=self._command(),
            workdir=str(workdir.resolve()),
        )
        try:
            handle = driver.start(spec)
        except BaseException as exc:
            self.store.fail(agent_id, f"failed to start: {exc}")
            self.store.terminated(agent_id, "failed to start")
            self.quota.release(tenant_id, reservation)
            raise
        log.info("agent spawned", extra={"agent_id": agent_id, "tenant_id": tenant_id, "driver": driver.name})
        started = self.store.started(agent_id, handle)
        if not driver.guest_heartbeats:  # up means ready (vmhost watches its process)
            started = self.store.heartbeat(tenant_id, agent_id, "ready", None)
        return started

    def terminate(self, agent: AgentRecord, reason: str) -> tuple[AgentRecord, list[str]]:
        """Stop the guest, give back its leases, reservation and address. Idempotent."""
        if agent.state == "terminated":
            return agent, []
        self.store.stopping(agent.id, reason)
        if agent.handle is not None and agent.driver in self.drivers:
            self.drivers[agent.driver].stop(agent.handle)
        released: list[str] = []
        try:
            released, quarantined = self.tickets.release_agent(agent.tenant_id, agent.id, reason)
            released += quarantined
        except SwarmError as exc:  # the reaper still returns them when their leases lapse
            log.warning("lease release failed", extra={"agent_id": agent.id, "error": exc.message})
        try:
            self.quota.release(agent.tenant_id, agent.reservation_id)
        except SwarmError as exc:  # the guest is gone either way; quota lists the reservation for reconciling
            log.warning("reservation not released", extra={"agent_id": agent.id, "error": exc.message})
        return self.store.terminated(agent.id, reason), released

    def close(self) -> None:
        self.quota.close()
        self.tickets.close()
