"""Services export their spans to telemetry over mutual TLS with their own
certificate, and keep doing so when cert-manager rotates it: the exporter
moves to a new connection when the files change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from swarmcommon.pki import service_id
from swarmcommon.telemetry import RotatingExporter
from swarmcommon.tls import ClientTls
from tests.support.pki import MeshPki
from tests.support.secure import SecureService
from tests.support.waiting import eventually


def _spans() -> tuple[ReadableSpan, ...]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("test").start_as_current_span("work"):
        pass
    return memory.get_finished_spans()


def test_span_export_follows_a_rotated_certificate(
    servers: dict[str, SecureService], pki: MeshPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"https://{servers['telemetry'].target}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    mine = tmp_path / "quota"
    shutil.copytree(pki.identity("quota"), mine)
    exporter = RotatingExporter(ClientTls.in_dir(mine))
    try:
        assert exporter.export(_spans()) == SpanExportResult.SUCCESS

        # Rotated to a certificate telemetry does not trust: the next exports use it, and fail.
        foreign = pki.foreign_ca.issue(service_id(pki.trust_domain, "quota"), dns_names=["quota"])
        foreign.write(mine, pki.foreign_ca.cert_pem)
        eventually(lambda: exporter.export(_spans()) == SpanExportResult.FAILURE, timeout=20, interval=0.5)

        # Rotated again by the mesh CA: exports succeed without a restart.
        pki.ca.issue(service_id(pki.trust_domain, "quota"), dns_names=["quota"]).write(mine, pki.ca_pem)
        eventually(lambda: exporter.export(_spans()) == SpanExportResult.SUCCESS, timeout=20, interval=0.5)
    finally:
        exporter.shutdown()
