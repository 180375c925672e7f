"""Wiring: settings + clock -> a running quota server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swarm.quota.v1 import quota_pb2_grpc as pb_grpc
from swarm_quota.config import Settings
from swarm_quota.servicer import ACCESS, QuotaServicer, Stores
from swarm_quota.stores.api_keys import ApiKeys, dev_pepper
from swarm_quota.stores.counters import Counters
from swarm_quota.stores.reservations import Reservations
from swarm_quota.stores.tenants import TenantStore
from swarm_quota.tables import VERSION_TABLE
from swarmcommon import migrations
from swarmcommon.clock import Clock, SystemClock
from swarmcommon.db import Database
from swarmcommon.grpcserver import GrpcService, ServerHandle, start_server
from swarmcommon.security import ServerSecurity

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = "swarm.quota.v1.QuotaService"


def migrate(database_url: str) -> None:
    migrations.upgrade(database_url, MIGRATIONS, VERSION_TABLE)


@dataclass
class Quota:
    handle: ServerHandle
    db: Database
    stores: Stores

    @property
    def port(self) -> int:
        return self.handle.port

    def before_drain(self) -> None:
        """Nothing runs in the background."""

    def close(self) -> None:
        self.db.dispose()

    def stop(self, grace: float = 5.0) -> None:
        self.handle.stop(grace)
        self.close()


def start(settings: Settings, clock: Clock | None = None) -> Quota:
    if settings.migrate_on_start:
        migrate(settings.database_url)
    clock = clock or SystemClock()
    db = Database.from_url(settings.database_url, pool_size=settings.db_pool_size)
    # Settings refused a missing or placeholder pepper unless in development mode.
    pepper = settings.api_key_pepper or dev_pepper(db, clock)
    counters = Counters(db, clock)
    stores = Stores(TenantStore(db, clock), ApiKeys(db, clock, pepper), counters, Reservations(db, counters))
    servicer = QuotaServicer(stores)
    handle = start_server(
        [
            GrpcService(
                SERVICE_NAME,
                lambda server: pb_grpc.add_QuotaServiceServicer_to_server(servicer, server),
                domain="swarm.quota",
                access=ACCESS,
            )
        ],
        listen_address=settings.listen_address,
        security=ServerSecurity.from_settings(settings),
        max_workers=settings.grpc_max_workers,
        reuse_port=settings.reuse_port,
        metrics_port=settings.worker_metrics_port(),
    )
    return Quota(handle, db, stores)
