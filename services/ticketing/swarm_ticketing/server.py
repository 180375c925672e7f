"""Wiring: settings + clock -> a running ticketing server (used by
`python -m swarm_ticketing`, the tests and the benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from swarm.ticketing.v1 import ticketing_pb2_grpc as pb_grpc
from swarm_ticketing.config import Settings
from swarm_ticketing.domain import LeasePolicy
from swarm_ticketing.leases import LeaseManager
from swarm_ticketing.quota import GrpcTicketQuota
from swarm_ticketing.reaper import Reaper
from swarm_ticketing.servicer import TicketingServicer
from swarm_ticketing.store import TicketStore
from swarm_ticketing.tables import VERSION_TABLE, outbox, outbox_dead_letters
from swarmcommon import migrations
from swarmcommon.clock import Clock, SystemClock
from swarmcommon.db import Database
from swarmcommon.grpcserver import GrpcService, ServerHandle, start_server
from swarmcommon.outbox import OutboxRelay

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = "swarm.ticketing.v1.TicketingService"


def migrate(database_url: str) -> None:
    migrations.upgrade(database_url, MIGRATIONS, VERSION_TABLE)


@dataclass
class Ticketing:
    handle: ServerHandle
    db: Database
    store: TicketStore
    leases: LeaseManager
    reaper: Reaper
    relay: OutboxRelay | None = None

    @property
    def port(self) -> int:
        return self.handle.port

    def before_drain(self) -> None:
        self.reaper.stop()
        if self.relay is not None:
            self.relay.stop()

    def close(self) -> None:
        self.db.dispose()
        if isinstance(self.store.quota, GrpcTicketQuota):
            self.store.quota.close()

    def stop(self, grace: float = 5.0) -> None:
        self.before_drain()
        self.handle.stop(grace)
        self.close()


def start(settings: Settings, clock: Clock | None = None) -> Ticketing:
    if settings.migrate_on_start:
        migrate(settings.database_url)
    clock = clock or SystemClock()
    db = Database.from_url(settings.database_url, pool_size=settings.db_pool_size)
    quota = GrpcTicketQuota(settings.quota_target) if settings.quota_target else None
    store = TicketStore(db, clock, quota)
    leases = LeaseManager(
        db,
        clock,
        LeasePolicy(
            default_lease=timedelta(seconds=settings.lease_seconds),
            max_failures=settings.max_failures,
        ),
    )
    servicer = TicketingServicer(store, leases)
    handle = start_server(
        [
            GrpcService(
                SERVICE_NAME,
                lambda server: pb_grpc.add_TicketingServiceServicer_to_server(servicer, server),
                domain="swarm.ticketing",
            )
        ],
        listen_address=settings.listen_address,
        max_workers=settings.grpc_max_workers,
        reuse_port=settings.reuse_port,
    )
    reaper = Reaper(leases, settings.reaper_interval_seconds)
    reaper.start()
    relay = (
        OutboxRelay(db, outbox, outbox_dead_letters, settings.events_target)
        if settings.events_target
        else None
    )
    if relay is not None:
        relay.start()
    return Ticketing(handle, db, store, leases, reaper, relay)
