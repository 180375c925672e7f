"""Wiring: settings + clock -> a running vmhost server (bridge, drivers,
reconcile, outbox relay, self-healing)."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from swarm.vmhost.v1 import vmhost_pb2_grpc as pb_grpc
from swarm_vmhost import firewall, network, tables
from swarm_vmhost.cgroups import CgroupTree, Limits
from swarm_vmhost.config import Settings
from swarm_vmhost.credentials import AgentCredentials, revoked_by
from swarm_vmhost.domain import AgentState, DriverName, HealthPolicy
from swarm_vmhost.drivers.base import GuestDriver
from swarm_vmhost.drivers.gvisor import GvisorDriver
from swarm_vmhost.drivers.netns import NetnsDriver
from swarm_vmhost.drivers.process import ProcessDriver
from swarm_vmhost.drivers.qemu import QemuDriver
from swarm_vmhost.guests import guest_target, guest_url, service_targets
from swarm_vmhost.healing import Healer
from swarm_vmhost.host import VmHost
from swarm_vmhost.monitor import Monitor
from swarm_vmhost.pool import AgentPools, PoolReconciler
from swarm_vmhost.servicer import ACCESS, VmHostServicer
from swarm_vmhost.stores import AddressPool, AgentStore, HealingLog, HeldAddresses, PoolStore
from swarm_vmhost.tables import VERSION_TABLE, outbox, outbox_dead_letters
from swarmcommon import metrics, migrations
from swarmcommon.clients import QuotaClient, TicketingClient
from swarmcommon.clock import Clock, SystemClock
from swarmcommon.db import Database
from swarmcommon.grpcserver import GrpcService, ServerHandle, start_server
from swarmcommon.outbox import OutboxRelay
from swarmcommon.security import ServerSecurity, client_tls

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = "swarm.vmhost.v1.VmHostService"


def _guest_target(settings: Settings, handle: ServerHandle, with_tokens: bool) -> str:
    """vmhost's port for guests: its agent port; in insecure dev mode without
    one, its mesh port (as before)."""
    if handle.agent_port is not None:
        return f"{settings.agent_listen_address.rsplit(':', 1)[0]}:{handle.agent_port}"
    if with_tokens:
        log.warning("no agent_listen_address: guests cannot reach vmhost to heartbeat")
        return ""
    return f"{settings.listen_address.rsplit(':', 1)[0]}:{handle.port}"


def guest_policy(
    settings: Settings, bridge: network.Bridge, own_target: str, with_tokens: bool
) -> firewall.Policy:
    """The bridge's filter: on the host, guests reach the ports they are told
    to call on the bridge address (and the configured extra ones); beyond
    it, only the operator's allow-list."""
    targets = service_targets(settings, own_target, with_tokens).values()
    told = [guest_target(t, bridge, True) for t in targets]
    ports = {int(port) for host, _, port in (t.rpartition(":") for t in told) if host == bridge.address}
    llm = urlsplit(guest_url(settings.llm_proxy_url.replace("{host}", bridge.address), bridge, True))
    if llm.hostname == bridge.address:
        ports.add(llm.port or (443 if llm.scheme == "https" else 80))
    return firewall.Policy(
        frozenset(ports) | firewall.parse_ports(settings.guest_host_ports_extra),
        firewall.parse_egress(settings.guest_egress_allow),
    )


def migrate(database_url: str) -> None:
    migrations.upgrade(database_url, MIGRATIONS, VERSION_TABLE)


def health_policy(settings: Settings) -> HealthPolicy:
    return HealthPolicy(
        heartbeat_interval=timedelta(seconds=settings.heartbeat_interval_seconds),
        missed_heartbeats=settings.missed_heartbeats,
        start_timeout=timedelta(seconds=settings.start_timeout_seconds),
        stale_ticket=timedelta(seconds=settings.stale_ticket_seconds),
        lease_lost_grace=timedelta(seconds=settings.lease_lost_grace_seconds),
    )


def hidden_from_guests(settings: Settings) -> list[str]:
    """Host directories no guest may see, even where a path it reads holds them:
    the database's, the TLS keys', the workroot (every guest's directory)."""
    hidden = [settings.workroot]
    if settings.tls_dir:
        hidden.append(settings.tls_dir)
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        hidden.append(str(Path(url.database).resolve().parent))
    return hidden


def drivers(
    settings: Settings, bridge: network.Bridge, ca_file: str = "", addresses: HeldAddresses | None = None
) -> dict[DriverName, GuestDriver]:
    limits = Limits(settings.guest_memory_mb * 1024 * 1024, settings.guest_cpus, settings.guest_pids)
    standard = settings.guest_command == "python -m swarmagent.guest"
    return {
        DriverName.NETNS: NetnsDriver(
            bridge,
            Path(settings.workroot).resolve(),
            limits,
            # A tree per bridge and driver: another vmhost's (or the other
            # driver's) reconcile never takes these groups for its leftovers.
            CgroupTree(Path(settings.cgroup_root), f"swarm-{bridge.name}-netns"),
            settings.allow_unlimited_guests,
            warm=settings.warm_guests if standard else 0,
            hidden=hidden_from_guests(settings),
            ca_file=ca_file,
        ),
        DriverName.GVISOR: GvisorDriver(
            bridge,
            Path(settings.workroot).resolve(),
            limits,
            # A tree per bridge: another vmhost's reconcile never takes these groups for its leftovers.
            CgroupTree(Path(settings.cgroup_root), f"swarm-{bridge.name}"),
            settings.allow_unlimited_guests,
            snapshot=standard and settings.warm_guests > 0,
            hidden=hidden_from_guests(settings),
            ca_file=ca_file,
            ahead=settings.warm_guests,
            addresses=addresses,
        ),
        DriverName.PROCESS: ProcessDriver(
            allowed=settings.insecure_dev or settings.default_driver == "process"
        ),
        DriverName.QEMU: QemuDriver(
            bridge, Path(settings.guest_image_dir), Path(settings.workroot) / "qemu", settings.qemu_accel
        ),
    }


@dataclass
class VmHostApp:
    handle: ServerHandle
    db: Database
    host: VmHost
    healer: Healer
    monitor: Monitor
    relay: OutboxRelay | None
    reconciled: list[str]
    pooler: PoolReconciler

    @property
    def port(self) -> int:
        return self.handle.port

    def before_drain(self) -> None:
        self.pooler.stop()
        self.monitor.stop()

    def close(self) -> None:
        """Guests do not outlive the service: stop them all, then the bridge."""
        for agent in self.host.agents.live():
            try:
                self.host.terminate(agent, "vmhost shut down")
            except Exception:  # keep stopping the others
                log.exception("terminate on shutdown failed", extra={"agent_id": agent.id})
        for driver in self.host.drivers.values():
            if hasattr(driver, "close"):
                driver.close()  # its warm and restored-ahead guests (on the bridge)
        if network.probe() is None:
            network.remove_bridge(self.host.bridge)
        if self.relay is not None:
            self.relay.stop()
        self.host.close()
        self.db.dispose()

    def stop(self, grace: float = 5.0) -> None:
        self.before_drain()
        self.handle.stop(grace)
        self.close()


def start(settings: Settings, clock: Clock | None = None) -> VmHostApp:
    if settings.migrate_on_start:
        migrate(settings.database_url)
    clock = clock or SystemClock()
    credentials = AgentCredentials.from_settings(settings, clock)  # refuses to start without a key
    db = Database.from_url(settings.database_url, pool_size=settings.db_pool_size)
    bridge = network.Bridge(settings.bridge_name, ipaddress.IPv4Network(settings.bridge_cidr))
    if network.probe() is None:
        network.ensure_bridge(bridge)
        if (why := firewall.probe()) is not None:  # guests are never on an unfiltered bridge
            raise firewall.FirewallError(f"cannot filter bridge {bridge.name}: {why}")
    pool = AddressPool(bridge.guest_addresses())
    agents = AgentStore(db, clock, pool)
    held = HeldAddresses(db, clock, pool)
    host = VmHost(
        settings,
        agents,
        drivers(settings, bridge, credentials.ca_file, held),
        bridge,
        QuotaClient(settings.quota_target, tls=client_tls(settings)) if settings.quota_target else None,
        TicketingClient(settings.ticketing_target, tls=client_tls(settings))
        if settings.ticketing_target
        else None,
        credentials=credentials,
    )
    healer = Healer(host, HealingLog(db, clock))
    monitor = Monitor(host, healer, health_policy(settings), settings.monitor_interval_seconds)
    pools = PoolStore(db, clock)
    # Target pools are reconciled as often as the monitor checks.
    pooler = PoolReconciler(host, pools, settings.monitor_interval_seconds)
    # Nothing leaks across restarts: what a crash cut short is finished
    # (reconcile.py); guests that died meanwhile fail their heartbeat checks
    # and are healed like any silent guest; devices nobody owns are removed.
    reconciled = monitor.reconciler.run(at_start=True)
    reconciled += [f"{a}: address held for a guest no agent took released" for a in held.release_unowned()]
    live = {a.id for a in agents.live()}
    reconciled += [item for driver in host.drivers.values() for item in driver.reconcile(live)]
    if network.probe() is None:
        firewall.reconcile(bridge, live)  # pins of guests that are gone
    for driver in host.drivers.values():
        if hasattr(driver, "start_pool"):
            driver.start_pool()  # warm sandboxes, once leftovers are gone
    handle = start_server(
        [
            GrpcService(
                SERVICE_NAME,
                lambda server: pb_grpc.add_VmHostServiceServicer_to_server(
                    VmHostServicer(host, healer, monitor, AgentPools(pools, settings.pool_max_per_role)),
                    server,
                ),
                domain="swarm.vmhost",
                access=ACCESS,
            )
        ],
        listen_address=settings.listen_address,
        # vmhost checks its own agents: a token works only while its agent is live.
        security=ServerSecurity.from_settings(settings, agent_tokens=True, revoked=revoked_by(agents)),
        agent_listen_address=settings.agent_listen_address,
        max_workers=settings.grpc_max_workers,
        reuse_port=settings.reuse_port,
        metrics_port=settings.worker_metrics_port(),
        collectors=[metrics.agents_by_state(db, tables.agents.c.state, AgentState)],
    )
    host.own_target = _guest_target(settings, handle, host.credentials.enabled)
    if network.probe() is None:  # vmhost's own port for guests is known only now
        firewall.install(bridge, guest_policy(settings, bridge, host.own_target, host.credentials.enabled))
    relay = (
        OutboxRelay(db, outbox, outbox_dead_letters, settings.events_target, tls=client_tls(settings))
        if settings.events_target
        else None
    )
    if relay is not None:
        relay.start()
    monitor.start()
    pooler.start()
    return VmHostApp(handle, db, host, healer, monitor, relay, reconciled, pooler)
