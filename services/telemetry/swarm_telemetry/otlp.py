"""OTLP in: ExportTraceServiceRequest -> span rows; and OTLP out: a copy of
every accepted export for a downstream receiver (Jaeger in a cluster)."""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2

log = logging.getLogger(__name__)

TENANT, TICKET, AGENT = "swarm.tenant_id", "swarm.ticket_id", "swarm.agent_id"
MAX_NAME = 256
MAX_ATTRIBUTES_JSON = 64 * 1024


def value(v: common_pb2.AnyValue) -> Any:
    """An OTLP AnyValue as plain JSON-able Python."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


def _text(attrs: dict[str, Any], key: str, limit: int) -> str:
    raw = attrs.get(key)
    return str(raw)[:limit] if raw not in (None, "") else ""


@dataclass
class Converted:
    rows: list[dict[str, Any]]
    rejected: int
    error: str


def to_rows(request: otlp.ExportTraceServiceRequest) -> Converted:
    """Span rows from an export; malformed spans are counted, not fatal
    (OTLP's partial success), so one bad span never drops its batch."""
    rows: list[dict[str, Any]] = []
    rejected, error = 0, ""
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        service = _text(resource, "service.name", 128)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(span.trace_id) != 16 or len(span.span_id) != 8 or not any(span.trace_id):
                    rejected += 1
                    error = "span with an invalid trace_id or span_id (need 16 and 8 bytes)"
                    continue
                if span.parent_span_id and len(span.parent_span_id) != 8:
                    rejected += 1
                    error = "span with an invalid parent_span_id (need 8 bytes)"
                    continue
                merged = {**resource, **attributes(span.attributes)}
                encoded = json.dumps(merged, separators=(",", ":"), default=str)
                if len(encoded) > MAX_ATTRIBUTES_JSON:
                    encoded = json.dumps({"swarm.attributes_truncated": True, TENANT: merged.get(TENANT)})
                events = [
                    {
                        "name": e.name[:MAX_NAME],
                        "time_ns": e.time_unix_nano,
                        "attributes": attributes(e.attributes),
                    }
                    for e in span.events
                ]
                rows.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name[:MAX_NAME] or "(unnamed)",
                        "kind": int(span.kind),
                        "status": int(span.status.code),
                        "status_message": span.status.message[:4096],
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": max(span.end_time_unix_nano, span.start_time_unix_nano),
                        "attributes": encoded,
                        "events": json.dumps(events, separators=(",", ":"), default=str),
                        "service_name": service,
                        "tenant_id": _text(merged, TENANT, 128),
                        "ticket_id": _text(merged, TICKET, 64),
                        "agent_id": _text(merged, AGENT, 128),
                    }
                )
    return Converted(rows, rejected, error)


class Forwarder:
    """Ships received exports to a downstream OTLP receiver from a bounded
    queue on its own thread: a slow or absent downstream never slows
    ingestion; when the queue is full the oldest export is dropped (counted)."""

    def __init__(self, target: str, capacity: int = 1000, timeout: float = 10.0) -> None:
        self.target = target
        self.timeout = timeout
        # Exports are forwarded as received, without our own tracing (a traced
        # forward would be one more span to ingest and forward, forever).
        self._channel = grpc.insecure_channel(target)
        self._stub = otlp_grpc.TraceServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._queue: queue.Queue[otlp.ExportTraceServiceRequest | None] = queue.Queue(maxsize=capacity)
        self.forwarded = 0
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="otlp-forward", daemon=True)
        self._thread.start()

    def submit(self, request: otlp.ExportTraceServiceRequest) -> None:
        while True:
            try:
                self._queue.put_nowait(request)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _run(self) -> None:
        while (request := self._queue.get()) is not None:
            try:
                self._stub.Export(request, timeout=self.timeout)
                self.forwarded += 1
            except grpc.RpcError as exc:
                self.failed += 1
                log.warning("OTLP forward failed", extra={"target": self.target, "code": exc.code().name})

    def close(self) -> None:
        self.submit_stop()
        self._thread.join(timeout=self.timeout + 1)
        self._channel.close()

    def submit_stop(self) -> None:
        try:
            self._queue.put(None, timeout=1)
        except queue.Full:
            pass
