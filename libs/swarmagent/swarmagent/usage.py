"""Usage records on their way to the telemetry cost ledger.

A call to the model is spend that already happened: its record must reach
the ledger even when telemetry is down at that moment. The buffer belongs to
the agent process, not to a ticket, so a record outlives the ticket it was
made for; a background loop retries until the ledger takes it, and closing
the buffer (the agent stopping) tries once more. RecordUsage is idempotent
on the record's request_id (the provider's message id), so sending a record
twice, after an answer lost on the way back, counts it once.

    usage = UsageBuffer(TelemetryClient("telemetry:50054"))
    usage.start()          # the background retry
    usage.add(record)      # then usage.flush() to send it now
    usage.close()          # stop retrying, one last flush
"""

from __future__ import annotations

import logging
import threading

import grpc

from swarm.telemetry.v1 import telemetry_pb2 as tpb
from swarmcommon.clients import TelemetryClient
from swarmcommon.errors import SwarmError, Unavailable
from swarmcommon.periodic import Periodic

log = logging.getLogger(__name__)

# The ledger refused the record itself: sending it again cannot succeed, and
# keeping it would hold back every record behind it.
REFUSED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


class UsageBuffer(Periodic):
    """Records the ledger has not acknowledged yet, oldest first, one per request_id."""

    name = "usage-buffer"

    def __init__(
        self,
        telemetry: TelemetryClient,
        *,
        interval: float = 5.0,
        max_backoff: float = 60.0,
        capacity: int = 10_000,
    ) -> None:
        super().__init__(interval, max_backoff=max_backoff)
        if capacity < 1:
            raise ValueError(f"usage buffer capacity must be at least 1 (got {capacity})")
        self.telemetry = telemetry
        self.capacity = capacity
        # dicts keep insertion order: the oldest record is sent first.
        self._records: dict[str, tpb.RecordUsageRequest] = {}
        self._records_lock = threading.Lock()
        # One sender at a time (the caller's flush or the background pass),
        # so records go out in order and none is sent twice concurrently.
        self._sending = threading.Lock()

    @property
    def pending(self) -> int:
        with self._records_lock:
            return len(self._records)

    @property
    def is_full(self) -> bool:
        return self.pending >= self.capacity

    def add(self, record: tpb.RecordUsageRequest) -> None:
        """Keep `record` until the ledger takes it; a request_id already waiting is kept once."""
        with self._records_lock:
            self._records.setdefault(record.request_id, record)

    def flush(self) -> bool:
        """Send the waiting records, oldest first; True when none is left.

        Stops at the first failure a retry may cure (telemetry down or slow):
        the rest would fail the same way."""
        with self._sending:
            with self._records_lock:
                waiting = list(self._records.values())
            for record in waiting:
                try:
                    self.telemetry.record_usage(record)
                except SwarmError as exc:
                    if exc.code not in REFUSED:
                        log.warning(
                            "usage not recorded yet; will retry",
                            extra={"code": exc.code.name, "pending": self.pending},
                        )
                        return False
                    log.error(
                        "the ledger refused a usage record; dropping it",
                        extra={"request_id": record.request_id, "code": exc.code.name, "detail": exc.message},
                    )
                with self._records_lock:
                    self._records.pop(record.request_id, None)
            return self.pending == 0

    def run_once(self) -> bool:
        if not self.flush():
            # A failed pass: Periodic backs off (interval, 2x, ... max_backoff).
            raise Unavailable(f"{self.pending} usage records wait for the ledger")
        return False

    def close(self) -> None:
        """Stop the background retry and send what is left, once."""
        self.stop()
        if not self.flush():
            log.error("stopping with usage records the ledger never took", extra={"pending": self.pending})
