"""The one background-loop base: lifecycle, backoff, draining a backlog, wake."""

from __future__ import annotations

import threading
import time

import pytest

from swarmcommon.periodic import Periodic
from tests.support.waiting import eventually


class Scripted(Periodic):
    """Each pass pops the next outcome: True/False (more work or not) or an exception."""

    name = "scripted"

    def __init__(self, outcomes: list[object], **kw: float) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.outcomes = outcomes
        self.calls: list[float] = []

    def run_once(self) -> object:
        self.calls.append(time.monotonic())
        outcome = self.outcomes.pop(0) if self.outcomes else False
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_start_and_stop_are_idempotent_and_stop_ends_the_thread() -> None:
    loop = Scripted([], interval=0.01)
    loop.stop()  # before start: nothing to stop
    loop.start()
    loop.start()
    assert len([t for t in threading.enumerate() if t.name == "scripted"]) == 1
    eventually(lambda: loop.stats.passes >= 2)
    loop.stop()
    loop.stop()
    assert not loop.running
    loop.start()  # a stopped loop does not come back
    assert not loop.running


def test_a_non_positive_interval_disables_the_loop() -> None:
    loop = Scripted([], interval=0)
    loop.start()
    assert not loop.running
    assert loop.run_once() is False  # tests drive it by hand


def test_a_backlog_drains_without_waiting_an_interval_per_batch() -> None:
    loop = Scripted([True, True, True, False], interval=30)
    loop.start()
    loop.wake()
    eventually(lambda: len(loop.calls) == 4, timeout=5)
    loop.stop()
    assert loop.calls[-1] - loop.calls[0] < 5


def test_failures_back_off_exponentially_then_a_success_resets_the_delay() -> None:
    boom = RuntimeError("database down")
    loop = Scripted([boom, boom, boom, False, False], interval=0.05, max_backoff=0.4)
    loop.start()
    eventually(lambda: len(loop.calls) >= 5, timeout=10)
    loop.stop()
    gaps = [b - a for a, b in zip(loop.calls, loop.calls[1:], strict=False)]
    # after failures 1, 2, 3 the waits are 0.1, 0.2, 0.4; after the success, 0.05 again
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39
    assert gaps[3] < 0.3
    assert loop.stats.failures == 3
    assert loop.stats.consecutive_failures == 0
    assert "database down" in loop.stats.last_error
    assert loop.stats.last_success is not None


def test_wake_runs_the_next_pass_now() -> None:
    loop = Scripted([], interval=60)
    loop.start()
    loop.wake()
    eventually(lambda: loop.stats.passes == 1, timeout=5)
    loop.stop()


def test_several_workers_run_passes_concurrently() -> None:
    inside, peak, lock = [0], [0], threading.Lock()

    class Slow(Periodic):
        name = "slow"

        def run_once(self) -> bool:
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.1)
            with lock:
                inside[0] -= 1
            return False

    loop = Slow(interval=0.01, workers=3)
    loop.start()
    eventually(lambda: peak[0] == 3, timeout=5)
    loop.stop()
    assert not loop.running


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers"):
        Scripted([], interval=1, workers=0)
