"""Wiring: settings + clock -> a running events server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from swarm.events.v1 import events_pb2_grpc as pb_grpc
from swarm_events.config import Settings
from swarm_events.dispatcher import DeliveryPolicy, Dispatcher
from swarm_events.servicer import EventsServicer
from swarm_events.ssrf import parse_networks
from swarm_events.store import EventStore
from swarm_events.stream import LiveFeed
from swarm_events.tables import VERSION_TABLE
from swarm_events.webhooks import WebhookStore
from swarmcommon import migrations
from swarmcommon.clock import Clock, SystemClock
from swarmcommon.db import Database
from swarmcommon.grpcserver import GrpcService, ServerHandle, start_server

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = "swarm.events.v1.EventsService"


def migrate(database_url: str) -> None:
    migrations.upgrade(database_url, MIGRATIONS, VERSION_TABLE)


@dataclass
class Events:
    handle: ServerHandle
    db: Database
    store: EventStore
    webhooks: WebhookStore
    dispatcher: Dispatcher
    feed: LiveFeed

    @property
    def port(self) -> int:
        return self.handle.port

    def before_drain(self) -> None:
        self.feed.close()
        self.dispatcher.stop()

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
    store = EventStore(db, clock)
    allowed = parse_networks(settings.webhook_allow_networks)
    webhooks = WebhookStore(db, clock, allowed)
    policy = DeliveryPolicy(
        schedule=tuple(float(x) for x in settings.retry_schedule_seconds.split(",") if x.strip()),
        jitter=settings.retry_jitter,
        timeout=settings.delivery_timeout_seconds,
        disable_after=timedelta(seconds=settings.disable_after_seconds),
    )
    dispatcher = Dispatcher(
        db,
        clock,
        store,
        policy,
        allowed,
        settings.dispatcher_workers,
        settings.dispatcher_poll_seconds,
    )
    feed = LiveFeed(
        store,
        poll_seconds=settings.stream_poll_seconds,
        max_streams=settings.max_streams,
    )
    store.listeners.append(feed.notify)
    servicer = EventsServicer(store, webhooks, dispatcher, feed)
    handle = start_server(
        [
            GrpcService(
                SERVICE_NAME,
                lambda server: pb_grpc.add_EventsServiceServicer_to_server(servicer, server),
                domain="swarm.events",
            )
        ],
        listen_address=settings.listen_address,
        max_workers=settings.grpc_max_workers,
        reuse_port=settings.reuse_port,
    )
    dispatcher.start()
    return Events(handle, db, store, webhooks, dispatcher, feed)
