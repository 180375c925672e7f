"""Background safety net: expired leases nobody rescued and stale ones (an
agent heartbeating without progress) go back to READY (or to quarantine),
and request ids past their retention are forgotten."""

from __future__ import annotations

import logging
from datetime import timedelta

from swarm_ticketing.stores import requests
from swarm_ticketing.stores.lost import LostLeases
from swarmcommon import metrics
from swarmcommon.periodic import Periodic

log = logging.getLogger(__name__)


class Reaper(Periodic):
    name = "ticketing-reaper"

    def __init__(
        self,
        lost: LostLeases,
        interval: float,
        request_retention: timedelta,
        batch: int = 200,
        stale_after: timedelta | None = None,
    ) -> None:
        super().__init__(interval)
        self.lost = lost
        self.request_retention = request_retention
        self.batch = batch
        # A lease whose work makes no progress this long is released (None: never).
        self.stale_after = stale_after

    def run_once(self) -> int:
        """One pass; how many leases it reaped and request ids it forgot (more may wait when > 0)."""
        result = self.lost.reap_expired(self.batch)
        reaped = len(result.released) + len(result.quarantined)
        metrics.LEASES_EXPIRED.inc(reaped)
        if reaped:
            log.info(
                "reaped expired leases",
                extra={"released": result.released, "quarantined": result.quarantined},
            )
        stale = 0
        if self.stale_after is not None:
            hung = self.lost.release_stale(self.stale_after, self.batch)
            stale = len(hung.released) + len(hung.quarantined)
            if stale:
                log.warning(
                    "released stale leases (agents heartbeating without progress)",
                    extra={"released": hung.released, "quarantined": hung.quarantined},
                )
        before = self.lost.clock.now() - self.request_retention
        return reaped + stale + requests.forget(self.lost.db, before)
