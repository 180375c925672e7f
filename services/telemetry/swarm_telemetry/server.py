"""Wiring: settings + clock -> a running telemetry server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from swarm.telemetry.v1 import telemetry_pb2_grpc as pb_grpc
from swarm_telemetry.budgets import QuotaBudgets
from swarm_telemetry.config import Settings
from swarm_telemetry.forwarder import OtlpForwarder
from swarm_telemetry.ledger import UsageLedger
from swarm_telemetry.proxy.serve import ProxyServer, start_llm_proxy
from swarm_telemetry.retention import SpanRetention
from swarm_telemetry.servicer import ACCESS, OTLP_ACCESS, OtlpTraceServicer, TelemetryServicer
from swarm_telemetry.stores.spans import SpanStore
from swarm_telemetry.stores.usage import UsageStore
from swarm_telemetry.tables import VERSION_TABLE
from swarmcommon import migrations
from swarmcommon.clock import Clock, SystemClock
from swarmcommon.db import Database
from swarmcommon.grpcserver import GrpcService, ServerHandle, start_server
from swarmcommon.revocation import RevocationList, revocation_list, revoked, start_revocations
from swarmcommon.security import ServerSecurity, client_tls

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
    retention: SpanRetention
    forwarder: OtlpForwarder | None
    budgets: QuotaBudgets | None
    revocations: RevocationList | None = None
    llm_proxy: ProxyServer | None = None

    @property
    def port(self) -> int:
        return self.handle.port

    def before_drain(self) -> None:
        self.retention.stop()
        if self.llm_proxy is not None:
            self.llm_proxy.stop()  # running LLM calls finish and settle first
        if self.revocations is not None:
            self.revocations.stop()

    def close(self) -> None:
        """After the server stopped: nothing submits to the forwarder any more."""
        self.retention.stop()
        if self.forwarder is not None:
            self.forwarder.stop()
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
    budgets = QuotaBudgets(settings.quota_target, tls=client_tls(settings)) if settings.quota_target else None
    ledger = UsageLedger(UsageStore(db, clock), clock, budgets)
    forwarder = (
        OtlpForwarder(settings.forward_otlp_target, settings.forward_queue_size)
        if settings.forward_otlp_target
        else None
    )
    retention = SpanRetention(
        spans,
        timedelta(hours=settings.span_retention_hours),
        settings.retention_interval_seconds,
        settings.retention_batch,
    )
    telemetry = TelemetryServicer(spans, ledger)
    otlp = OtlpTraceServicer(spans, forwarder)
    revocations = revocation_list(settings.vmhost_target, settings)
    security = ServerSecurity.from_settings(settings, agent_tokens=True, revoked=revoked(revocations))
    handle = start_server(
        [
            GrpcService(
                SERVICE_NAME,
                lambda server: pb_grpc.add_TelemetryServiceServicer_to_server(telemetry, server),
                domain="swarm.telemetry",
                access=ACCESS,
            ),
            GrpcService(
                OTLP_SERVICE_NAME,
                lambda server: otlp_grpc.add_TraceServiceServicer_to_server(otlp, server),  # type: ignore[no-untyped-call]
                domain="swarm.telemetry",
                access=OTLP_ACCESS,
                traced=False,
            ),
        ],
        listen_address=settings.listen_address,
        security=security,
        agent_listen_address=settings.agent_listen_address,
        max_workers=settings.grpc_max_workers,
        reuse_port=settings.reuse_port,
        metrics_port=settings.worker_metrics_port(),
    )
    if forwarder is not None:
        forwarder.start()
    retention.start()  # does nothing when retention_interval_seconds is 0
    start_revocations(revocations)
    llm_proxy = start_llm_proxy(settings, security, ledger, db, clock)
    return Telemetry(handle, db, spans, ledger, retention, forwarder, budgets, revocations, llm_proxy)
