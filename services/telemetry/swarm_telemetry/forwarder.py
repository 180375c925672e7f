"""OTLP out: a copy of every accepted export for a downstream OTLP receiver
(Jaeger in a cluster).

A queue consumer on the shared background-loop base: `submit` queues the
export and wakes the loop, each pass forwards one export and reports whether
more are waiting, so a backlog drains without waiting an interval per
export. What the base adds over a bare thread: idempotent start/stop, a
named thread, failure counting, and backoff while the downstream fails
(submits do not cut the backoff short). A slow or absent downstream never
slows ingestion: the queue is bounded and, when full, the oldest export is
dropped (counted).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from swarmcommon.clients import ServiceChannel
from swarmcommon.errors import SwarmError
from swarmcommon.periodic import Periodic


class OtlpForwarder(Periodic):
    name = "otlp-forward"

    def __init__(self, target: str, capacity: int = 1000, timeout: float = 10.0) -> None:
        super().__init__(interval=1.0, max_backoff=30.0)
        self.target = target
        self.timeout = timeout
        self.capacity = capacity
        self._channel = ServiceChannel(target, default_timeout=timeout)
        # The untraced view: a traced forward would be one more span to
        # ingest and forward, forever.
        self._stub = otlp_grpc.TraceServiceStub(self._channel.streaming)  # type: ignore[no-untyped-call]
        self._queue: deque[otlp.ExportTraceServiceRequest] = deque()
        self._queue_lock = threading.Lock()
        self.forwarded = 0
        self.dropped = 0
        self.failed = 0

    def submit(self, request: otlp.ExportTraceServiceRequest) -> None:
        with self._queue_lock:
            if len(self._queue) >= self.capacity:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(request)
        if self.stats.consecutive_failures == 0:
            self.wake()

    @property
    def queued(self) -> int:
        with self._queue_lock:
            return len(self._queue)

    def run_once(self) -> bool:
        """Forward the oldest queued export; True when more are waiting. A
        failed forward is counted and dropped (the spans are stored here),
        and raises so the loop backs off."""
        return self._forward_next(self.timeout)

    def _forward_next(self, timeout: float) -> bool:
        with self._queue_lock:
            if not self._queue:
                return False
            request = self._queue.popleft()
        try:
            self._stub.Export(request, timeout=timeout)
        except SwarmError:
            self.failed += 1
            raise
        self.forwarded += 1
        return self.queued > 0

    def stop(self) -> None:
        """Stop the loop, then forward what is still queued for up to
        `timeout` seconds (unless the downstream is failing), and close."""
        super().stop()
        deadline = time.monotonic() + self.timeout
        with contextlib.suppress(SwarmError):
            while self.stats.consecutive_failures == 0 and (left := deadline - time.monotonic()) > 0:
                if not self._forward_next(left):
                    break
        self._channel.close()
