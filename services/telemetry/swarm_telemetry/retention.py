"""Span retention: spans older than the retention period are deleted, a
bounded batch per pass (the cost ledger is kept: it is billing)."""

from __future__ import annotations

import logging
from datetime import timedelta

from swarm_telemetry.stores.spans import SpanStore
from swarmcommon.periodic import Periodic

log = logging.getLogger(__name__)


class SpanRetention(Periodic):
    name = "span-retention"

    def __init__(self, spans: SpanStore, keep: timedelta, interval: float, batch: int = 5000) -> None:
        super().__init__(interval, max_backoff=max(interval, 600.0))
        self.spans = spans
        self.keep = keep
        self.batch = batch
        self.purged = 0  # spans deleted by this loop, for logs and tests

    def run_once(self) -> bool:
        """Delete one batch of expired spans; True when a full batch went
        (more may be waiting, so the next pass runs at once)."""
        removed = self.spans.purge(self.keep, limit=self.batch)
        self.purged += removed
        if removed:
            log.info("spans purged", extra={"loop": self.name, "count": removed})
        return removed >= self.batch
