"""Wiring: settings + clock -> a running events server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swarm.events.v1 import events_pb2_grpc as pb_grpc
from swarm_events.config import Settings
from swarm_events.dispatcher import Dispatcher
from swarm_events.probes import Probes
from swarm_events.retention import Retention
from swarm_events.sender import Sender
from swarm_events.servicer import ACCESS, EventsServicer
from swarm_events.ssrf import parse_networks
from swarm_events.stores.attempts import AttemptStore
from swarm_events.stores.deliveries import DeliveryStore
from swarm_events.stores.events import EventLog
from swarm_events.stores.webhooks import WebhookStore
from swarm_events.stream import LiveFeed
from swarm_events.tables import VERSION_TABLE
from swarmcommon import migrations
from swarmcommon.clock import Clock, SystemClock
from swarmcommon.db import Database
from swarmcommon.grpcserver import GrpcService, ServerHandle, start_server
from swarmcommon.security import ServerSecurity

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = "swarm.events.v1.EventsService"


def migrate(database_url: str) -> None:
    migrations.upgrade(database_url, MIGRATIONS, VERSION_TABLE)


@dataclass
class Events:
    handle: ServerHandle
    db: Database
    log: EventLog
    webhooks: WebhookStore
    deliveries: DeliveryStore
    attempts: AttemptStore
    sender: Sender
    dispatcher: Dispatcher
    retention: Retention
    feed: LiveFeed

    @property
    def port(self) -> int:
        return self.handle.port

    def before_drain(self) -> None:
        self.feed.close()
        self.dispatcher.stop()
        self.retention.stop()

    def close(self) -> None:
        self.db.dispose()

    def stop(self, grace: float = 5.0) -> None:
        self.before_drain()
        self.handle.stop(grace)
        self.close()


def start(settings: Settings, clock: Clock | None = None) -> Events:
    if settings.migrate_on_start:
        migrate(settings.database_url)
    clock = clock or SystemClock()
    db = Database.from_url(settings.database_url, pool_size=settings.db_pool_size)
    allowed = parse_networks(settings.webhook_allow_networks)
    log = EventLog(db, clock)
    webhooks = WebhookStore(db, clock, allowed)
    deliveries = DeliveryStore(db, clock)
    attempts = AttemptStore(db, clock)
    sender = Sender(
        clock, allowed, settings.delivery_timeout_seconds, per_endpoint=settings.workers_per_endpoint()
    )
    dispatcher = Dispatcher(
        deliveries,
        attempts,
        log,
        sender,
        settings.retry_policy(),
        clock,
        poll=settings.dispatcher_poll_seconds,
        workers=max(1, settings.dispatcher_workers),
        batch=settings.dispatcher_batch,
    )
    retention = Retention(db, clock, settings.retention_policy(), settings.retention_interval_seconds)
    feed = LiveFeed(
        log,
        poll_seconds=settings.stream_poll_seconds,
        max_streams=settings.max_streams,
        max_per_tenant=settings.max_streams_per_tenant,
    )
    log.listeners += [feed.notify, dispatcher.wake]
    deliveries.listeners.append(dispatcher.wake)
    probes = Probes(webhooks, attempts, sender, clock)
    servicer = EventsServicer(log, webhooks, deliveries, attempts, probes, feed)
    handle = start_server(
        [
            GrpcService(
                SERVICE_NAME,
                lambda server: pb_grpc.add_EventsServiceServicer_to_server(servicer, server),
                domain="swarm.events",
                access=ACCESS,
            )
        ],
        listen_address=settings.listen_address,
        security=ServerSecurity.from_settings(settings),
        max_workers=settings.grpc_max_workers,
        reuse_port=settings.reuse_port,
        metrics_port=settings.worker_metrics_port(),
    )
    if settings.dispatcher_workers:  # 0: delivery off (tests run passes by hand)
        dispatcher.start()
    if settings.worker_index == 0:  # one retention loop per host is enough
        retention.start()
    return Events(handle, db, log, webhooks, deliveries, attempts, sender, dispatcher, retention, feed)
