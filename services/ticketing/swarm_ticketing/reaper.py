"""Background safety net: returns expired leases nobody rescued to READY."""

from __future__ import annotations

import logging
import threading

from swarm_ticketing.leases import LeaseManager

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, leases: LeaseManager, interval_seconds: float) -> None:
        self.leases = leases
        self.interval = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Reap until no expired lease is left; returns how many were reaped."""
        total = 0
        while True:
            result = self.leases.reap_expired()
            n = len(result.released) + len(result.quarantined)
            if n:
                log.info(
                    "reaped expired leases",
                    extra={
                        "released": result.released,
                        "quarantined": result.quarantined,
                    },
                )
            total += n
            if n == 0:
                return total

    def start(self) -> None:
        if self.interval <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="reaper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # a failed pass must not kill the loop; the next one retries
                log.exception("reaper pass failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
