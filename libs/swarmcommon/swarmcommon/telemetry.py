"""OpenTelemetry for every process: one tracer provider, OTLP export when
OTEL_EXPORTER_OTLP_ENDPOINT is set, and W3C trace context on every gRPC hop
(the server and client interceptors come from opentelemetry-instrumentation-grpc).

Metrics (ticketing's claims by how they matched, ready -> claimed latency)
go out over OTLP only when OTEL_EXPORTER_OTLP_METRICS_ENDPOINT names a
collector: the mesh's own intake (telemetry) and Jaeger take traces only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from opentelemetry import metrics, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from swarmcommon.tls import ClientTls

_lock = threading.Lock()
_configured = False


def setup_tracing(service_name: str, tls: ClientTls | None = None) -> trace.TracerProvider:
    """Install the SDK tracer provider once per process; later calls reuse it.

    `tls`: the workload's certificate, presented to telemetry's OTLP intake
    when the endpoint is https:// (mutual TLS like every other call in the
    mesh)."""
    global _configured
    with _lock:
        if _configured:
            return trace.get_tracer_provider()
        provider = TracerProvider(
            resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
        )
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        ):
            # Imported lazily: the exporter pulls in its own gRPC stack.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter,
            )

            endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
                "OTEL_EXPORTER_OTLP_ENDPOINT", ""
            )
            # https: the mesh's telemetry intake (mutual TLS, our certificate);
            # anything else (a plaintext collector such as Jaeger) as configured.
            exporter: SpanExporter = (
                RotatingExporter(tls)
                if tls is not None and endpoint.startswith("https://")
                else OTLPSpanExporter()
            )
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        if os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
            _setup_metrics(provider.resource)
        _configured = True
        return provider


def _setup_metrics(resource: Resource) -> None:
    # Imported lazily, as the span exporter. The exporter reads its endpoint,
    # headers and credentials from OTEL_EXPORTER_OTLP_METRICS_*; the reader
    # its interval from OTEL_METRIC_EXPORT_INTERVAL (default 60 s).
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))


class RotatingExporter(SpanExporter):
    """OTLP export over mutual TLS that moves to a new connection when the
    workload's certificate files change (the exporter reads them only once)."""

    def __init__(self, tls: ClientTls) -> None:
        self._tls = tls
        self._exporter, self._generation = self._connect()

    def _connect(self) -> tuple[SpanExporter, int]:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        credentials, generation = self._tls.credentials()
        return OTLPSpanExporter(insecure=False, credentials=credentials), generation

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._tls.generation() != self._generation:
            old = self._exporter
            self._exporter, self._generation = self._connect()
            old.shutdown()
        return self._exporter.export(spans)

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


def shutdown_tracing() -> None:
    """Flush and stop span (and metric) export."""
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
