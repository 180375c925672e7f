"""Waiting for something to happen, without sleeping a fixed time.

    eventually(lambda: len(receiver.received) == 2)
    ticket = eventually(lambda: get(stub, tid).state == DONE and get(stub, tid), what="ticket done")

A check that "nothing arrives" never sleeps and then asserts: it waits for a
positive sentinel sent after the thing that must not arrive (a later event
on the same path), then asserts the unwanted one is absent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """Call `check` until it returns something truthy, and return that.

    `check` may also raise AssertionError while not yet satisfied; the last
    one is re-raised on timeout, so the failure says what was wrong."""
    deadline = time.monotonic() + timeout
    last: AssertionError | None = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = None
        except AssertionError as exc:
            last = exc
        if time.monotonic() >= deadline:
            if last is not None:
                raise last
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)
