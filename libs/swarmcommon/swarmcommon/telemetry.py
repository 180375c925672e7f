"""OpenTelemetry for every process: one tracer provider, OTLP export when
OTEL_EXPORTER_OTLP_ENDPOINT is set, and W3C trace context on every gRPC hop
(the server and client interceptors come from opentelemetry-instrumentation-grpc).
"""

from __future__ import annotations

import os
import threading

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_lock = threading.Lock()
_configured = False


def setup_tracing(service_name: str) -> trace.TracerProvider:
    """Install the SDK tracer provider once per process; later calls reuse it."""
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

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _configured = True
        return provider


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()
