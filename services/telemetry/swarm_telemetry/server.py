"""Wiring: settings + clock -> a running telemetry server."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from swarm.telemetry.v1 import telemetry_pb2_grpc as pb_grpc
from swarm_telemetry.budgets import GrpcBudgets
from swarm_telemetry.config import Settings
from swarm_telemetry.otlp import Forwarder
from swarm_telemetry.servicer import OtlpTraceServicer, TelemetryServicer
from swarm_telemetry.spans import SpanStore
from swarm_telemetry.tables import VERSION_TABLE
from swarm_telemetry.usage import UsageLedger
from swarmcommon import migrations
from swarmcommon.clock import Clock, SystemClock
from swarmcommon.db import Database
from swarmcommon.grpcserver import GrpcService, ServerHandle, start_server

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = "swarm.telemetry.v1.TelemetryService"
OTLP_SERVICE_NAME = "opentelemetry.proto.collector.trace.v1.TraceService"


def migrate(database_url: str) -> None:
    migrations.upgrade(database_url, MIGRATIONS, VERSION_TABLE)


@dataclass
class Telemetry:
    handle: ServerHandle
    db: Database
    spans: SpanStore
    ledger: UsageLedger
    forwarder: Forwarder | None
    budgets: GrpcBudgets | None
    _stop: threading.Event
    _retention: threading.Thread | None

    @property
    def port(self) -> int:
        return self.handle.port

    def before_drain(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._retention is not None:
            self._retention.join(timeout=5)
        if self.forwarder is not None:
            self.forwarder.close()
        if self.budgets is not None:
            self.budgets.close()
        self.db.dispose()

    def stop(self, grace: float = 5.0) -> None:
        self.before_drain()
        self.handle.stop(grace)
        self.close()


def start(settings: Settings, clock: Clock | None = None) -> Telemetry:
    if settings.migrate_on_start:
        migrate(settings.database_url)
    clock = clock or SystemClock()
    db = Database.from_url(settings.database_url, pool_size=settings.db_pool_size)
    spans = SpanStore(db, clock)
    budgets = GrpcBudgets(settings.quota_target) if settings.quota_target else None
    ledger = UsageLedger(db, clock, budgets)
    forwarder = (
        Forwarder(settings.forward_otlp_target, settings.forward_queue_size)
        if settings.forward_otlp_target
        else None
    )
    telemetry = TelemetryServicer(spans, ledger)
    otlp = OtlpTraceServicer(spans, forwarder)
    handle = start_server(
        [
            GrpcService(
                SERVICE_NAME,
                lambda server: pb_grpc.add_TelemetryServiceServicer_to_server(telemetry, server),
                domain="swarm.telemetry",
            ),
            GrpcService(
                OTLP_SERVICE_NAME,
                lambda server: otlp_grpc.add_TraceServiceServicer_to_server(otlp, server),  # type: ignore[no-untyped-call]
                domain="swarm.telemetry",
                traced=False,
            ),
        ],
        listen_address=settings.listen_address,
        max_workers=settings.grpc_max_workers,
        reuse_port=settings.reuse_port,
    )
    stop = threading.Event()
    retention = None
    if settings.retention_interval_seconds > 0:
        keep = timedelta(hours=settings.span_retention_hours)

        def purge_loop() -> None:
            while not stop.wait(settings.retention_interval_seconds):
                try:
                    removed = spans.purge(keep)
                    if removed:
                        log.info("spans purged", extra={"count": removed})
                except Exception:
                    log.exception("span purge failed")

        retention = threading.Thread(target=purge_loop, name="span-retention", daemon=True)
        retention.start()
    return Telemetry(handle, db, spans, ledger, forwarder, budgets, stop, retention)
