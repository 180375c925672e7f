"""Where the demo tells its story, and how it waits for the mesh to catch up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from rich.console import Console

T = TypeVar("T")

console = Console()


def poll(check: Callable[[], T | None], timeout: float, interval: float = 0.2) -> T | None:
    """`check()` until it returns something truthy (returned) or `timeout`
    passes (None): the mesh works asynchronously, the demo shows the result."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value or None
        time.sleep(interval)
