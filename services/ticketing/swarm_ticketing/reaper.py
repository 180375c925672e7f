"""Background safety net: expired leases nobody rescued go back to READY (or
to quarantine), and request ids past their retention are forgotten."""

from __future__ import annotations

import logging
from datetime import timedelta

from swarm_ticketing.stores import requests
from swarm_ticketing.stores.lost import LostLeases
from swarmcommon.periodic import Periodic

log = logging.getLogger(__name__)


class Reaper(Periodic):
    name = "ticketing-reaper"

    def __init__(
        self, lost: LostLeases, interval: float, request_retention: timedelta, batch: int = 200
    ) -> None:
        super().__init__(interval)
        self.lost = lost
        self.request_retention = request_retention
        self.batch = batch

    def run_once(self) -> int:
        """One pass; how many leases it reaped and request ids it forgot (more may wait when > 0)."""
        result = self.lost.reap_expired(self.batch)
        reaped = len(result.released) + len(result.quarantined)
        if reaped:
            log.info(
                "reaped expired leases",
                extra={"released": result.released, "quarantined": result.quarantined},
            )
        before = self.lost.clock.now() - self.request_retention
        return reaped + requests.forget(self.lost.db, before)
