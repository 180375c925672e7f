"""One shape for every background loop (reaper, monitor, outbox relay,
dispatcher, retention).

    class Reaper(Periodic):
        name = "reaper"

        def run_once(self) -> bool:
            ...            # one pass; True when more work is waiting

    reaper = Reaper(interval=10)
    reaper.start()         # idempotent; a second start does nothing
    reaper.wake()          # run the next pass now instead of after the interval
    reaper.stop()          # idempotent; waits for the pass in flight

A pass that raises is logged with the loop's name and retried with
exponential backoff (interval, 2x, 4x, ... capped at `max_backoff`); the
first clean pass resets the delay. A pass that reports more work (returns a
truthy value) is followed at once by the next one, so a backlog drains
without waiting an interval per batch. `stats` counts passes and failures
for logs, health checks and metrics.

Like River's start/stop maintenance services, the base owns the thread and
its lifecycle; a subclass owns only what one pass does.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime

log = logging.getLogger(__name__)


@dataclass
class LoopStats:
    passes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    last_success: datetime | None = None


class Periodic(ABC):
    """A background loop: `run_once` every `interval` seconds on `workers` threads."""

    name: str = "periodic"

    def __init__(
        self,
        interval: float,
        *,
        max_backoff: float | None = None,
        workers: int = 1,
        join_timeout: float = 30.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"{self.name}: workers must be at least 1 (got {workers})")
        self.interval = interval
        self.max_backoff = max(interval, max_backoff if max_backoff is not None else 60.0)
        self.workers = workers
        self.join_timeout = join_timeout
        self.stats = LoopStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Condition(self._lock)
        self._woken = False
        self._threads: list[threading.Thread] = []

    @abstractmethod
    def run_once(self) -> object:
        """One pass. A truthy result means more work is waiting: run again at once."""

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> None:
        """Start the loop's threads; does nothing if started, stopped, or `interval <= 0`.

        An interval of 0 or less disables the loop (tests then call
        `run_once` themselves)."""
        with self._lock:
            if self._threads or self._stop.is_set() or self.interval <= 0:
                return
            for i in range(self.workers):
                suffix = f"-{i}" if self.workers > 1 else ""
                thread = threading.Thread(target=self._loop, name=f"{self.name}{suffix}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def stop(self) -> None:
        """Stop after the pass in flight; safe to call twice or before start.
        A stopped loop does not start again.

        A subclass holding resources (channels, clients) overrides this,
        calls `super().stop()` first, then releases them."""
        with self._lock:
            if not self._threads:
                return  # never started: nothing to stop, and it may still start
            self._stop.set()
            self._wake.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=self.join_timeout)
                if thread.is_alive():
                    log.warning("background loop did not stop in time", extra={"loop": self.name})

    def wake(self) -> None:
        """Run the next pass now rather than at the end of the interval."""
        with self._lock:
            self._woken = True
            self._wake.notify_all()

    def _sleep(self, seconds: float) -> bool:
        """Wait up to `seconds` or until woken; False once stopping."""
        with self._lock:
            if not self._woken and not self._stop.is_set():
                self._wake.wait(seconds)
            self._woken = False
            return not self._stop.is_set()

    def _loop(self) -> None:
        delay = self.interval
        while self._sleep(delay):
            while not self._stop.is_set():
                more = self._pass()
                if more is None:  # failed: back off
                    delay = min(max(delay, self.interval) * 2, self.max_backoff)
                    break
                delay = self.interval
                if not more:
                    break

    def _pass(self) -> bool | None:
        """True/False: more work or not; None: the pass failed."""
        try:
            more = bool(self.run_once())
        except Exception as exc:  # a failed pass must not end the loop; the next one retries
            with self._lock:
                self.stats.passes += 1
                self.stats.failures += 1
                self.stats.consecutive_failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                failures = self.stats.consecutive_failures
            log.warning(
                "background pass failed; backing off",
                extra={"loop": self.name, "consecutive_failures": failures},
                exc_info=True,
            )
            return None
        with self._lock:
            self.stats.passes += 1
            self.stats.consecutive_failures = 0
            self.stats.last_success = datetime.now(UTC)
        return more
